"""API tokens: issued for a username and password, expiring, throttled, locked out after failures."""

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.lockout import LockoutSerializer
from accounts.services import api_token_create


class AuthTokenCreateApi(APIView):
    """A token for ``Authorization: Token <token>``. It expires after API_TOKEN_TTL_HOURS and dies
    with a password change. Wrong passwords count towards a lockout (django-axes): after
    LOGIN_FAILURE_LIMIT failures for a username from one address, 429 until the cool-off ends."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AuthTokenInput"

        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AuthToken"

        token = serializers.CharField()
        expiry = serializers.DateTimeField(allow_null=True, help_text="When the token stops working.")

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Missing fields or wrong username or password."),
            429: OpenApiResponse(LockoutSerializer, description="Too many failed logins or requests."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The HttpRequest, not DRF's wrapper: django-axes marks it, and its middleware answers a lockout.
        user = authenticate(request._request, **serializer.validated_data)
        if user is None:
            raise ValidationError({"non_field_errors": ["Unable to log in with the username and password given."]})
        # What django.contrib.auth.login sends (knox's own login view does too): the audit trail records the
        # login, django-axes resets the failures, last_login is set.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        instance, token = api_token_create(user=user)
        return Response(self.OutputSerializer({"token": token, "expiry": instance.expiry}).data)
