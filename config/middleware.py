"""Request-level guards that must run before Django reads a body."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

# Room for the multipart boundaries and the form's text fields next to the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class RequestBodyLimitMiddleware:
    """Refuse a body larger than the upload limit from its Content-Length, before a byte of it is read.

    Under WSGI Django reads no more than Content-Length, and a request without one has an empty body, so this
    is the whole guard; the upload serializer still checks the file's own size."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return JsonResponse({"detail": f"Invalid Content-Length header {declared[:32]!r}."}, status=400)
        limit = settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
        if length > limit:
            return JsonResponse(
                {
                    "detail": f"The request body is {length / 1e6:.1f} MB; the limit for an upload is "
                    f"{settings.MAX_UPLOAD_BYTES / 1e6:.0f} MB. Nothing was stored."
                },
                status=413,
            )
        return self.get_response(request)
