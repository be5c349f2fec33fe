from django.apps import AppConfig


class InferenceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "inference"

    def ready(self) -> None:
        # The decoders' limits come from settings, once per process (web and workers alike).
        from django.conf import settings

        from inference.preprocessing import DecodeLimits, configure_decode_limits

        configure_decode_limits(
            DecodeLimits(
                max_pixels=settings.IMAGE_MAX_PIXELS,
                max_side=settings.IMAGE_MAX_SIDE,
                max_deflate_ratio=settings.DICOM_MAX_DEFLATE_RATIO,
            )
        )
