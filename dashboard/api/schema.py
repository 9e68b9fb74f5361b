"""What the OpenAPI schema says about errors, so that it lists every answer an operation gives.

DRF answers a refused permission with 403, a missing object or page with 404, a bad
body or query with 400 and a body of another media type with 415; drf-spectacular
documents only the success answer. The
``ApiSchema`` below adds those answers to each operation that can give them, and the
409s are declared where they happen (``CONFLICT``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class DetailSerializer(serializers.Serializer):
    """An error that is not about one field: ``{"detail": "what went wrong and what to do"}``."""

    detail = serializers.CharField()


# DRF's 400: each bad field by name with its messages (rows of a list as a list of such
# objects), ``non_field_errors`` for the body as a whole, or ``detail`` when the body
# cannot be read at all.
BAD_REQUEST = OpenApiResponse(
    {
        "type": "object",
        "description": "Each bad field by name with its messages; `detail` for an unreadable body.",
        "additionalProperties": {},
    },
    description="The request names what to fix.",
)
FORBIDDEN = OpenApiResponse(DetailSerializer, description="Not signed in, or not allowed.")
TOKEN_REFUSED = OpenApiResponse(
    DetailSerializer, description="An API token that is unknown, expired or revoked."
)
UNSUPPORTED = OpenApiResponse(
    DetailSerializer, description="A body that is not JSON, a form or a readable multipart form."
)
NOT_FOUND = OpenApiResponse(DetailSerializer, description="No such object or page.")
CONFLICT = OpenApiResponse(DetailSerializer, description="The object's state refuses this now.")

WRITES = ("POST", "PUT", "PATCH")


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema, adding the 400, 401, 403, 404 and 415 answers DRF gives."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code, body in self._error_answers().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(body, code, direction=direction)
        return responses

    def _error_answers(self) -> dict[str, OpenApiResponse]:
        answers: dict[str, OpenApiResponse] = {}
        # A page number out of range is a 404; the other query parameters are checked (400).
        has_query = any(
            param.get("in") == "query" and param.get("name") != "page"
            for param in self._get_parameters()
        )
        if self.method in WRITES or has_query:
            answers["400"] = BAD_REQUEST
        if self.method in WRITES:
            answers["415"] = UNSUPPORTED
        public = all(isinstance(permission, AllowAny) for permission in self.view.get_permissions())
        if not public:
            answers["401"] = TOKEN_REFUSED
            answers["403"] = FORBIDDEN
        if "{" in self.path or self._is_list_view():
            answers["404"] = NOT_FOUND  # a bad page number is a 404 too
        return answers
