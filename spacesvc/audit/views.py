"""``GET /api/audit``: the trail, newest first, a page at a time; ``GET /api/audit-logs``: the same
trail in BRIDGEPORT's shape, so its audit page reads it."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp_apispec import docs
from marshmallow import Schema, fields

from spacesvc import postgres
from spacesvc.audit import queries
from spacesvc.audit.model import ACTIONS, RESOURCE_TYPES, AuditEntry, LogEntry, LogFilters
from spacesvc.http.errors import validation_error
from spacesvc.http.jsonio import json_response, timestamp
from spacesvc.http.openapi import SECURITY, errors, ok
from spacesvc.settings import ascii_number

DEFAULT_AUDIT_PAGE = 100
DEFAULT_LOGS_PAGE = 50
MAX_AUDIT_PAGE = 500
MAX_FILTER_LENGTH = 200


class AuditEntrySchema(Schema):
    id = fields.Integer(required=True)
    at = fields.String(required=True, metadata={"format": "date-time"})
    action = fields.String(required=True, metadata={"enum": ACTIONS})
    resourceType = fields.String(required=True, metadata={"enum": RESOURCE_TYPES})
    resourceId = fields.String(required=True, allow_none=True)
    actor = fields.String(required=True, metadata={"description": "a token's name, or cli:<user>"})
    requestId = fields.String(required=True, allow_none=True)
    details = fields.Dict(required=True)


class LogUserSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(required=True, allow_none=True, metadata={"description": "always null: a token"})
    name = fields.String(required=True)


class LogEnvironmentSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True, allow_none=True)


class LogSchema(Schema):
    id = fields.Integer(required=True)
    action = fields.String(required=True)
    resourceType = fields.String(required=True)
    resourceId = fields.String(required=True, allow_none=True)
    resourceName = fields.String(required=True, allow_none=True)
    details = fields.String(required=True, allow_none=True, metadata={"description": "a JSON object, as a string"})
    success = fields.Boolean(required=True)
    error = fields.String(required=True, allow_none=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    user = fields.Nested(LogUserSchema, required=True, allow_none=True)
    environment = fields.Nested(LogEnvironmentSchema, required=True, allow_none=True)


class LogPageSchema(Schema):
    logs = fields.List(fields.Nested(LogSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "entries matching the filters"})


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


def present_log(log: LogEntry) -> dict[str, Any]:
    """An entry as BRIDGEPORT's AuditLog: every entry is a change that happened (success)."""
    entry = log.entry
    user = None if log.token_id is None else {"id": log.token_id, "email": None, "name": entry.actor}
    environment = None if log.environment_id is None else {"id": log.environment_id, "name": log.environment_name}
    return {
        "id": entry.id,
        "action": entry.action,
        "resourceType": entry.resource_type,
        "resourceId": entry.resource_id,
        "resourceName": log.resource_name,
        "details": orjson.dumps(entry.details).decode() if entry.details else None,
        "success": True,
        "error": None,
        "createdAt": timestamp(entry.at),
        "user": user,
        "environment": environment,
    }


def _query_text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and not 1 <= len(value) <= MAX_FILTER_LENGTH:
        raise validation_error(f"{name} must be 1 to {MAX_FILTER_LENGTH} characters.", field=name)
    if value is not None and any(ord(c) < 0x20 or c == "\x7f" for c in value):
        # no stored value holds one, and PostgreSQL's text cannot hold a NUL at all
        raise validation_error(f"{name} must not contain control characters.", field=name)
    return value


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
            {"in": "query", "name": "resourceType", "schema": {"type": "string", "enum": RESOURCE_TYPES}},
            {"in": "query", "name": "action", "schema": {"type": "string", "enum": ACTIONS}},
        ],
        responses={200: ok(AuditPageSchema, "A page of entries"), **errors(400, 401, 403, 429, 503)},
    )
    async def get(self) -> web.Response:
        request = self.request
        limit = _query_int(request, "limit", DEFAULT_AUDIT_PAGE, 1, MAX_AUDIT_PAGE)
        assert limit is not None
        before = _query_int(request, "before", None, 1, 2**63 - 1)
        resource_type = _query_choice(request, "resourceType", RESOURCE_TYPES)
        action = _query_choice(request, "action", ACTIONS)
        async with postgres.acquire(request.app) as conn:
            page = await queries.entries(conn, limit=limit, before=before, resource_type=resource_type, action=action)
        next_before = page[-1].id if len(page) == limit else None
        return json_response({"entries": [present(entry) for entry in page], "nextBefore": next_before})

    head = get  # HEAD is answered as GET, without the body


def _text_param(name: str, description: str) -> dict[str, Any]:
    schema = {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_LENGTH}
    return {"in": "query", "name": name, "schema": schema, "description": description}


class AuditLogsView(web.View):
    URL_PATH = "/api/audit-logs"

    @docs(
        tags=["audit"],
        summary="The audit trail as BRIDGEPORT's audit page reads it, newest first (admin)",
        operationId="listAuditLogs",
        security=SECURITY,
        parameters=[
            _text_param("environmentId", "entries about this environment (its changes and credential deliveries)"),
            _text_param("resourceType", "e.g. spaces_config, environment, token, secret, credentials"),
            _text_param("resourceId", "entries about this resource"),
            _text_param("action", "e.g. created, replaced, patched, deleted, enabled, delivered"),
            {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE}},
            {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0}},
        ],
        responses={200: ok(LogPageSchema, "A page of entries and the total"), **errors(400, 401, 403, 429, 503)},
    )
    async def get(self) -> web.Response:
        request = self.request
        limit = _query_int(request, "limit", DEFAULT_LOGS_PAGE, 1, MAX_AUDIT_PAGE)
        offset = _query_int(request, "offset", 0, 0, 2**31 - 1)
        assert limit is not None and offset is not None
        filters = LogFilters(
            environment_id=_query_text(request, "environmentId"),
            resource_type=_query_text(request, "resourceType"),
            resource_id=_query_text(request, "resourceId"),
            action=_query_text(request, "action"),
        )
        async with postgres.acquire(request.app) as conn:
            page, total = await queries.logs(conn, filters, limit=limit, offset=offset)
        return json_response({"logs": [present_log(log) for log in page], "total": total})

    head = get  # HEAD is answered as GET, without the body
