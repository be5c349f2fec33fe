"""The OpenAPI schema as a checked contract (tests/test_api_contract.py runs schemathesis against it).

Every operation declares the errors it can answer, in DRF's shapes, without repeating them on each
view: 400 where it takes input, 401 and 403 unless it is public, 404 where it names an object or
pages a list, 429 for the throttled. Text inputs say what DRF refuses: NUL characters anywhere, and
whitespace-only values where a field may not be blank (DRF trims before checking).
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ANY_TEXT = r"^[^\u0000]*$"
NON_BLANK_TEXT = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


class ErrorDetailSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ErrorDetail"

    detail = serializers.CharField()


VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Invalid input: each field (or non_field_errors) maps to a list of messages.",
)
ERRORS = {
    "401": OpenApiResponse(ErrorDetailSerializer, description="Not logged in (no or an expired token)."),
    "403": OpenApiResponse(ErrorDetailSerializer, description="Logged in without the role or permission needed."),
    "404": OpenApiResponse(ErrorDetailSerializer, description="No such object visible to you, or no such page."),
    "429": OpenApiResponse(ErrorDetailSerializer, description="Too many requests or failed logins."),
}


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        responses = operation["responses"]
        needed: dict = {}
        if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
            needed["400"] = VALIDATION_ERROR
        if not self._is_public():
            needed["401"], needed["403"] = ERRORS["401"], ERRORS["403"]
        if any(p["in"] == "path" or p["name"] == "page" for p in parameters):
            needed["404"] = ERRORS["404"]
        if getattr(self.view, "throttle_scope", None):
            needed["429"] = ERRORS["429"]
        for code, response in needed.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code)
        return operation

    def _is_public(self) -> bool:
        return all(isinstance(permission, AllowAny) for permission in self.view.get_permissions())

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and type(field) is serializers.CharField
            and not {"pattern", "enum", "format"} & set(schema)
        ):
            schema["pattern"] = ANY_TEXT if field.allow_blank or not field.trim_whitespace else NON_BLANK_TEXT
        return schema
