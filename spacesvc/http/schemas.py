"""Schemas every resource shares: the error envelope and a bare success."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields

from spacesvc.http.errors import ErrorCode


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
