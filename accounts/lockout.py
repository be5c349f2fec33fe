"""What a locked-out client gets (django-axes' AXES_LOCKOUT_CALLABLE): JSON for the API, a page for browsers."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import serializers


class LockoutSerializer(serializers.Serializer):
    detail = serializers.CharField()


def lockout_message() -> str:
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return f"Too many failed logins: this account is locked from your address for {minutes} minutes."


def lockout_response(request: HttpRequest, credentials: dict | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": lockout_message()}, status=429)
    return render(request, "registration/locked_out.html", {"message": lockout_message()}, status=429)
