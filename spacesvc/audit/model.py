"""Who acted, and what the trail records of it."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Resource(StrEnum):
    """What an entry is about (``resourceType``)."""

    SPACES_CONFIG = "spaces_config"
    ENVIRONMENT = "environment"
    TOKEN = "token"
    SECRET = "secret"
    CREDENTIALS = "credentials"


class Action(StrEnum):
    """What happened (``action``)."""

    CREATED = "created"
    REPLACED = "replaced"
    PATCHED = "patched"
    DELETED = "deleted"
    ENABLED = "enabled"
    DISABLED = "disabled"
    REVOKED = "revoked"
    MOVED = "moved"
    REENCRYPTED = "reencrypted"
    DELIVERED = "delivered"
    CONNECTION_TESTED = "connection.tested"
    BUCKETS_DISCOVERED = "buckets.discovered"


# Every resourceType and action the trail may hold: the built-in ones and each versioned
# resource's (``register``, called when a resource is declared). The API's filters and its
# document read these lists (the same objects) when they are served.
RESOURCE_TYPES: list[str] = [resource.value for resource in Resource]
ACTIONS: list[str] = [action.value for action in Action]


def register(resource_type: str, actions: tuple[str, ...]) -> None:
    for known, names in ((RESOURCE_TYPES, (resource_type,)), (ACTIONS, actions)):
        known.extend(name for name in names if name not in known)


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a token's name (with the request's id), or the command line."""

    name: str
    request_id: str | None = None

    @classmethod
    def command_line(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container's)
            user = "unknown"
        return cls(f"cli:{user}")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    action: str
    resource_type: str
    resource_id: str | None
    actor: str
    request_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogFilters:
    """What ``GET /api/audit-logs`` narrows the trail to (None: any)."""

    environment_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """An entry with what BRIDGEPORT's audit page shows beside it: the resource's name, the token
    that acted (None: not a token, or one no longer known) and the environment it is about."""

    entry: AuditEntry
    resource_name: str | None
    token_id: str | None
    environment_id: str | None
    environment_name: str | None
