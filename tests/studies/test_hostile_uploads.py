"""Malformed and hostile files through POST /api/studies/: a 4xx with a clear message, no row, no file."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from studies.models import Patient, Study
from tests.hostile import hostile_files
from tests.images import dicom_bytes

URL = "/api/studies/"


def _files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


def _message(body: dict) -> str:
    values = body.get("image") or body.get("detail") or body.get("non_field_errors") or []
    return " ".join(values) if isinstance(values, list) else str(values)


def test_the_corpus_holds_over_a_thousand_distinct_hostile_files():
    names = [name for name, _ in hostile_files()]
    assert len(names) >= 1000 and len(set(names)) == len(names)


@pytest.mark.django_db
def test_every_hostile_file_is_refused_with_a_4xx_and_a_message_leaving_no_row_and_no_file(
    api_client, uploader_user, media_root, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(uploader_user)
    failures = []
    with django_capture_on_commit_callbacks() as callbacks:
        for name, data in hostile_files():
            response = api_client.post(
                URL, {"image": SimpleUploadedFile(f"{name}.bin", data), "patient_ref": "P-1"}, format="multipart"
            )
            message = _message(response.json()) if response.status_code < 500 else ""
            if not 400 <= response.status_code < 500 or len(message) < 10 or "Traceback" in message:
                failures.append(f"{name}: {response.status_code} {response.content[:200]!r}")
    assert failures == []
    assert callbacks == []  # no prediction was ever dispatched
    assert Study.objects.count() == 0 and Patient.objects.count() == 0
    assert _files(media_root) == []


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_with_413_from_its_content_length(api_client, uploader_user, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    api_client.force_authenticate(uploader_user)
    response = api_client.post(URL, {"image": SimpleUploadedFile("big.png", b"\0" * 200_000)}, format="multipart")
    assert response.status_code == 413
    assert "the limit for an upload is" in response.json()["detail"]
    assert Study.objects.count() == 0


def test_the_body_is_not_read_when_content_length_is_over_the_limit(settings):
    """The middleware answers from the header alone: the body stream is never touched."""
    from django.test import RequestFactory

    from config.middleware import RequestBodyLimitMiddleware

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

    settings.MAX_UPLOAD_BYTES = 1000
    request = RequestFactory().post(URL, data=b"", content_type="application/octet-stream")
    request.META["CONTENT_LENGTH"] = str(10**9)
    request.META["wsgi.input"] = Unreadable()
    response = RequestBodyLimitMiddleware(lambda r: pytest.fail("the view ran"))(request)
    assert response.status_code == 413


@pytest.mark.django_db
def test_a_dicom_with_window_width_zero_is_refused_with_400_naming_the_window(api_client, uploader_user, media_root):
    import io

    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    dataset.WindowCenter, dataset.WindowWidth = 100, 0
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    api_client.force_authenticate(uploader_user)
    response = api_client.post(URL, {"image": SimpleUploadedFile("w.dcm", buffer.getvalue())}, format="multipart")
    assert response.status_code == 400
    assert "Window Center/Width" in response.json()["image"][0]
    assert Study.objects.count() == 0 and _files(media_root) == []


@pytest.mark.django_db
def test_a_deflated_dicom_declaring_12000_square_pixels_is_refused_from_its_header(api_client, uploader_user):
    from tests.hostile import _deflated_dicom_bomb

    api_client.force_authenticate(uploader_user)
    response = api_client.post(
        URL, {"image": SimpleUploadedFile("bomb.dcm", _deflated_dicom_bomb(64))}, format="multipart"
    )
    assert response.status_code == 400
    assert "decompression bomb" in response.json()["image"][0]


def _upload_and_predict(api_client, name: str, data: bytes) -> Study:
    """An upload, then its prediction message run as a worker would (which makes its rendition)."""
    from studies.tasks import study_predict_task

    study_id = api_client.post(URL, {"image": SimpleUploadedFile(name, data)}, format="multipart").json()["id"]
    assert not Study.objects.get(pk=study_id).rendition  # not made in the request
    assert study_predict_task.apply(args=[study_id]).get() == "done"
    return Study.objects.get(pk=study_id)


@pytest.mark.django_db
def test_before_its_prediction_an_uploads_thumbnail_is_cut_from_the_original(api_client, uploader_user):

    from tests.images import png_bytes

    api_client.force_authenticate(uploader_user)
    study_id = api_client.post(
        URL, {"image": SimpleUploadedFile("x.png", png_bytes(size=300))}, format="multipart"
    ).json()["id"]
    assert not Study.objects.get(pk=study_id).rendition
    assert _thumbnail_size(api_client, study_id, 120) == (120, 120)


def _thumbnail_size(api_client, study_id: int, size: int) -> tuple[int, int]:
    import io

    from PIL import Image

    response = api_client.get(f"{URL}{study_id}/image/?size={size}")
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)).size


@pytest.mark.django_db
def test_thumbnails_are_cut_from_the_stored_rendition_never_from_the_original(api_client, uploader_user, active_model):

    from tests.images import png_bytes

    api_client.force_authenticate(uploader_user)
    study = _upload_and_predict(api_client, "x.png", png_bytes(size=300))
    study_id = study.pk
    assert study.rendition.name.endswith(".jpg")  # only thumbnails are cut from a PNG's rendition
    Path(study.image.path).write_bytes(b"not decodable any more")  # a request that decoded it would fail
    assert _thumbnail_size(api_client, study_id, 120) == (120, 120)


@pytest.mark.django_db
def test_a_dicom_rendition_is_lossless_and_is_what_browsers_are_shown(api_client, uploader_user, active_model):
    import io

    from PIL import Image

    from tests.images import dicom_bytes

    api_client.force_authenticate(uploader_user)
    study = _upload_and_predict(api_client, "x.dcm", dicom_bytes())
    study_id = study.pk
    assert study.rendition.name.endswith(".png")
    response = api_client.get(f"{URL}{study_id}/image/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as shown, study.rendition.open("rb") as stored:
        assert shown.format == "PNG"
        assert response.content == stored.read()


def test_the_heatmap_overlay_is_made_from_a_downscaled_image():
    import io

    import numpy as np
    from PIL import Image

    from inference.services import OVERLAY_MAX_SIDE, heatmap_overlay_jpeg

    overlay = heatmap_overlay_jpeg(np.zeros((3000, 2000), dtype=np.uint8), np.ones((8, 8), dtype=np.float32))
    assert max(Image.open(io.BytesIO(overlay)).size) == OVERLAY_MAX_SIDE
