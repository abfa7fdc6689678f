"""Conditional reads (RFC 9110 ``If-None-Match``): answer 304 when the client has the version."""

from __future__ import annotations

import re

from aiohttp import web

ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')

# The OpenAPI parameter of a conditional read.
IF_NONE_MATCH_PARAM = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": 'The ETag the client has ("<version>"): 304 while it is current.',
}


def etag_for(version: int) -> str:
    return f'"{version}"'


def not_modified(request: web.Request, version: int) -> bool:
    """Whether the request's If-None-Match names ``version`` (weakly compared, as RFC 9110 says
    for GET), or is ``*``."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return str(version) in ENTITY_TAG.findall(header)


def not_modified_response(version: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=304, headers={**(headers or {}), "ETag": etag_for(version)})
