"""The issuer and the keys as spacesvc records them (docs/keys.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from backends import SecretLocation
from spacesvc.errors import NotFound
from spacesvc.keys.issuers import Grant, Permission

TYPES = ("digitalocean", "aws-iam")
ISSUER_SLOT = "issuer"

# A key's states: written 'minting' before the issuer is called; 'active' is delivered;
# 'retiring' still works until its overlap ends; 'deleting' is deleted at the issuer.
MINTING, ACTIVE, RETIRING, DELETING = "minting", "active", "retiring", "deleting"


def no_issuer() -> NotFound:
    return NotFound("No key issuer is configured.", hint="Set one with PUT /api/settings/spaces/issuer.")


@dataclass(frozen=True)
class IssuerInput:
    """An issuer to store; ``secret`` None keeps the stored one (same type only)."""

    type: str
    access_key: str | None
    region: str | None
    secret: str | None = field(repr=False)


@dataclass(frozen=True)
class IssuerConfig:
    id: str
    type: str
    access_key: str | None
    region: str | None
    secret_backend: str
    secret_version: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    # Deleted through the API while keys it minted are still being deleted with its credentials.
    deleted: bool = False

    @property
    def secret_location(self) -> SecretLocation:
        return SecretLocation(self.id, self.secret_version, slot=ISSUER_SLOT)


@dataclass(frozen=True)
class Grants:
    """What an environment's key may do: ``buckets`` None means all of the configuration's."""

    buckets: tuple[str, ...] | None = None
    permission: Permission = "readwrite"

    def effective(self, configured: tuple[str, ...]) -> tuple[str, ...]:
        return configured if self.buckets is None else self.buckets

    def for_issuer(self, configured: tuple[str, ...]) -> list[Grant]:
        return [Grant(bucket, self.permission) for bucket in self.effective(configured)]


@dataclass(frozen=True)
class EnvironmentKey:
    id: str
    environment_id: str | None
    environment_name: str
    name: str
    state: str
    access_key: str | None
    buckets: tuple[str, ...]
    permission: Permission
    secret_version: int | None
    created_at: datetime
    retire_after: datetime | None
    # The configuration's version at which the key became the delivered one.
    version: int | None

    @property
    def secret_location(self) -> SecretLocation:
        return SecretLocation(self.id, self.secret_version, slot=f"keys/{self.id}")
