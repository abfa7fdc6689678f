"""ETags and conditional requests (RFC 9110): the one ETag format and parser of the service, and
conditional reads (``If-None-Match``), which answer 304 while the client has the version, and
a write's preconditions (``If-Match``, ``If-None-Match: *``) for any versioned resource.

An ETag is a version, quoted: ``"3"``; a weak one (``W/"3"``) names the same version."""

from __future__ import annotations

import re

from aiohttp import web

from spacesvc.http.errors import validation_error
from spacesvc.resources.versioned import Preconditions

# A write's preconditions, parsed by the request pipeline where the route's policy takes them.
PRECONDITIONS: web.RequestKey[Preconditions] = web.RequestKey("preconditions")

# One entity-tag, weak or strong; its group is the opaque tag (the version, for this service's).
ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')
VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only: \d also takes other scripts' digits

# The OpenAPI parameter of a conditional read.
IF_NONE_MATCH_PARAM = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": 'The ETag the client has ("<version>"): 304 while it is current.',
}


def format_etag(version: int) -> str:
    """The ETag of ``version``."""
    return f'"{version}"'


def parse_etag(value: str) -> int | None:
    """The version one ETag names (``"3"``, ``W/"3"``), or None if ``value`` is not one such ETag."""
    match = ENTITY_TAG.fullmatch(value.strip())
    return int(match[1]) if match is not None and VERSION.fullmatch(match[1]) else None


def listed_tags(value: str) -> list[str]:
    """The opaque tags of every entity-tag in a list (``W/"3", "4"`` gives ``["3", "4"]``)."""
    return ENTITY_TAG.findall(value)


def not_modified(request: web.Request, version: int) -> bool:
    """Whether the request's If-None-Match names ``version`` (weakly compared, as RFC 9110 says
    for GET), or is ``*``."""
    value = request.headers.get("If-None-Match")
    return value is not None and (_names(value, version) or value.strip() == "*")


def names_version(request: web.Request, version: int) -> bool:
    """Whether If-None-Match names ``version`` itself (``*`` names none): what a watch waits on."""
    value = request.headers.get("If-None-Match")
    return value is not None and _names(value, version)


def _names(value: str, version: int) -> bool:
    # the ETag as this service sent it, what a client repeats, needs no list parsed
    return value == format_etag(version) or str(version) in listed_tags(value)


def not_modified_response(version: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=304, headers={**(headers or {}), "ETag": format_etag(version)})


# A watch holds a request at most this long (RFC 7240 ``Prefer: wait=N``, docs/guarantees.md).
MAX_WAIT_SECONDS = 60
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]{1,6})\"?(?:$|[,;\s])", re.IGNORECASE)

PREFER_PARAM = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"type": "string", "example": "wait=30"},
    "description": "With If-None-Match naming the current version: hold the request until the version "
    f"changes (200), or answer 304 after N seconds (1-{MAX_WAIT_SECONDS}; a longer wait is cut to "
    f"{MAX_WAIT_SECONDS}). Preference-Applied: wait=N says it was held.",
}


PREFERENCE_APPLIED = {
    "Preference-Applied": {"schema": {"type": "string"}, "description": "wait=N when the request was held"}
}


def preferred_wait(request: web.Request) -> int | None:
    """The seconds of a ``Prefer: wait=N`` (cut to MAX_WAIT_SECONDS), or None; as RFC 7240 says,
    a preference that cannot be understood is ignored."""
    prefer = request.headers.get("Prefer")
    match = PREFER_WAIT.search(prefer) if prefer is not None else None
    if match is None or int(match[1]) < 1:
        return None
    return min(int(match[1]), MAX_WAIT_SECONDS)


IF_MATCH_PARAM = {
    "in": "header",
    "name": "If-Match",
    "required": False,
    "schema": {"type": "string", "pattern": '^(W/)?"[0-9]{1,9}"$'},
    "description": 'Make the write conditional on the current version: "<version>" (the ETag).',
}
CREATE_ONLY_PARAM = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "schema": {"type": "string", "enum": ["*"]},
    "description": "* : create only; fails with 412 if a configuration exists.",
}


def preconditions(request: web.Request, *, allow_create_only: bool) -> Preconditions:
    """A write's If-Match (one ETag) and If-None-Match (``*``, on a PUT that may create)."""
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    version = None if if_match is None else parse_etag(if_match)
    if if_match is not None and version is None:
        message = 'If-Match must be one ETag, "<version>", as returned in the ETag header.'
        raise validation_error(message, field="If-Match")
    if if_none_match is not None and (not allow_create_only or if_none_match.strip() != "*"):
        raise validation_error("If-None-Match is only supported as '*' on PUT.", field="If-None-Match")
    return Preconditions(if_match=version, create_only=if_none_match is not None)
