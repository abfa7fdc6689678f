"""The Spaces configuration as the service thinks of it: the writable fields, a write's input,
and the stored configuration (the conditions a write may carry are the versioned-resource
core's, ``spacesvc.resources.versioned``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from backends import SecretLocation
from spacesvc.errors import NotFound

DEFAULT_REGION = "fra1"


def not_configured() -> NotFound:
    return NotFound("The Spaces configuration is not set.", hint="Create it first with PUT /api/settings/spaces.")


def default_endpoint(region: str) -> str:
    """BRIDGEPORT's default: the region's DigitalOcean Spaces host."""
    return f"{region}.digitaloceanspaces.com"


@dataclass(frozen=True)
class SpacesFields:
    """The writable non-secret fields, as stored. ``endpoint`` None means derived from region."""

    access_key: str
    region: str = DEFAULT_REGION
    endpoint: str | None = None
    buckets: tuple[str, ...] = ()

    @property
    def effective_endpoint(self) -> str:
        """The endpoint requests go to: the stored one, or the region's DigitalOcean Spaces host."""
        return self.endpoint or default_endpoint(self.region)


@dataclass(frozen=True)
class SpacesInput:
    """A configuration to store: the fields, and a new secret if one was given (None keeps the stored one)."""

    fields: SpacesFields
    secret: str | None


@dataclass(frozen=True)
class SpacesPatch:
    """A JSON Merge Patch of the writable fields; a key mapped to None resets it to its default."""

    changes: Mapping[str, Any]
    secret: str | None

    def apply(self, current: SpacesFields) -> SpacesFields:
        updated = current
        for name, value in self.changes.items():
            if name == "accessKey":
                updated = replace(updated, access_key=value)
            elif name == "region":
                updated = replace(updated, region=value or DEFAULT_REGION)
            elif name == "endpoint":
                updated = replace(updated, endpoint=value)
            elif name == "buckets":
                updated = replace(updated, buckets=tuple(value or ()))
        return updated


@dataclass(frozen=True)
class Enablement:
    """The configuration enabled (or not) for one environment: BRIDGEPORT's SpacesEnvironment."""

    id: str
    environment_id: str
    enabled: bool


@dataclass(frozen=True)
class SpacesConfig:
    """The stored configuration: its fields, where its secret is, and its bookkeeping."""

    id: str
    fields: SpacesFields
    secret_backend: str
    secret_stored: bool
    secret_version: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    enabled_environments: tuple[Enablement, ...] = ()

    @property
    def secret_location(self) -> SecretLocation:
        return SecretLocation(self.id, self.secret_version)


@dataclass(frozen=True)
class WriteOutcome:
    config: SpacesConfig
    created: bool
    changed: bool
    secret_changed: bool = False
