"""``GET /api/audit``: the trail, newest first, a page at a time."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from spacesvc import postgres
from spacesvc.audit import queries
from spacesvc.audit.model import Action, AuditEntry, Resource
from spacesvc.http.authorization import ADMIN, READ, requires
from spacesvc.http.errors import validation_error
from spacesvc.http.jsonio import json_response, timestamp
from spacesvc.http.openapi import SECURITY, errors, ok
from spacesvc.settings import ascii_number

DEFAULT_AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 500


class AuditEntrySchema(Schema):
    id = fields.Integer(required=True)
    at = fields.String(required=True, metadata={"format": "date-time"})
    action = fields.String(required=True, metadata={"enum": [action.value for action in Action]})
    resourceType = fields.String(required=True, metadata={"enum": [resource.value for resource in Resource]})
    resourceId = fields.String(required=True, allow_none=True)
    actor = fields.String(required=True, metadata={"description": "a token's name, or cli:<user>"})
    requestId = fields.String(required=True, allow_none=True)
    details = fields.Dict(required=True)


class AuditPageSchema(Schema):
    entries = fields.List(fields.Nested(AuditEntrySchema), required=True)
    nextBefore = fields.Integer(
        required=True, allow_none=True, metadata={"description": "pass as ?before= for the next page; null at the end"}
    )


def present(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": timestamp(entry.at),
        "action": entry.action,
        "resourceType": entry.resource_type,
        "resourceId": entry.resource_id,
        "actor": entry.actor,
        "requestId": entry.request_id,
        "details": entry.details,
    }


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not ascii_number(text) or not low <= int(text) <= high:
        raise validation_error(f"{name} must be a whole number from {low} to {high}.", field=name)
    return int(text)


def _query_choice(request: web.Request, name: str, choices: list[str]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise validation_error(f"{name} must be one of: {', '.join(choices)}.", field=name)
    return value


class AuditView(web.View):
    URL_PATH = "/api/audit"

    @docs(
        tags=["audit"],
        summary="The audit trail, newest first (admin)",
        operationId="listAudit",
        security=SECURITY,
        parameters=[
            {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE}},
            {"in": "query", "name": "before", "schema": {"type": "integer", "minimum": 1}},
            {"in": "query", "name": "resourceType", "schema": {"type": "string", "enum": [r.value for r in Resource]}},
            {"in": "query", "name": "action", "schema": {"type": "string", "enum": [a.value for a in Action]}},
        ],
        responses={200: ok(AuditPageSchema, "A page of entries"), **errors(400, 401, 403, 429, 503)},
    )
    @requires(roles=ADMIN, scope=READ)
    async def get(self) -> web.Response:
        request = self.request
        limit = _query_int(request, "limit", DEFAULT_AUDIT_PAGE, 1, MAX_AUDIT_PAGE)
        assert limit is not None
        before = _query_int(request, "before", None, 1, 2**63 - 1)
        resource_type = _query_choice(request, "resourceType", [r.value for r in Resource])
        action = _query_choice(request, "action", [a.value for a in Action])
        async with postgres.acquire(request.app) as conn:
            page = await queries.entries(conn, limit=limit, before=before, resource_type=resource_type, action=action)
        next_before = page[-1].id if len(page) == limit else None
        return json_response({"entries": [present(entry) for entry in page], "nextBefore": next_before})
