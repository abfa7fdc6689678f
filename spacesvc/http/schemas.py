"""Schemas every resource shares (the error envelope, a bare success), and request bodies loaded
by the schema that documents them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields

from spacesvc.http.errors import ApiError, ErrorCode

UNKNOWN_FIELD = "Unknown field."  # marshmallow's message for a field the schema does not have


class JsonBoolean(fields.Boolean):
    """JSON's ``true`` or ``false`` only (marshmallow's Boolean also takes "true", 1, "yes" …)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def load_body(
    schema: Schema, body: Mapping[str, Any], invalid: Callable[[str, Mapping[str, list[str]]], ApiError]
) -> dict[str, Any]:
    """``body`` as ``schema`` loads it, or the ApiError ``invalid`` makes of the field to name (an
    unknown field first, by name; else the first failing field by name) and every field's messages."""
    try:
        return dict(schema.load(body))
    except ValidationError as error:
        messages = error.normalized_messages()
        failing = {str(name): [str(m) for m in found] for name, found in messages.items()}
        unknown = sorted(name for name, found in failing.items() if found == [UNKNOWN_FIELD])
        raise invalid(unknown[0] if unknown else min(failing), failing) from None


class SuccessSchema(Schema):
    success = fields.Boolean(required=True)


class ErrorSchema(Schema):
    class Meta:
        unknown = INCLUDE  # more properties may come (docs/api.md)

    code = fields.String(required=True, metadata={"enum": [code.value for code in ErrorCode]})
    message = fields.String(required=True)
    field = fields.String(metadata={"description": "dot path of the input the error is tied to"})
    hint = fields.String()
    requestId = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), metadata={"description": "every failing field"}
    )
    dependency = fields.String(
        metadata={"description": "on 503: what is unavailable", "enum": ["database", "secret_backend", "storage"]}
    )
    checks = fields.Dict(
        keys=fields.String(), values=fields.Dict(), metadata={"description": "on /readyz: each check, ok or not"}
    )
