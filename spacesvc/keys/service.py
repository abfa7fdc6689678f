"""Minting, rotating, deleting and reconciling environments' keys (docs/keys.md).

The order of every step is what keeps a crash harmless:

- minting writes a row ``minting`` with the key's name and commits it *before* calling the
  issuer; the secret and the row's ``active`` state commit together afterwards. A crash between
  leaves a prefixed key at the issuer whose access key spacesvc never recorded: reconciliation
  deletes it, and nothing ever delivered it.
- deleting marks the row ``deleting`` (no longer delivered) and commits, then calls the issuer,
  then removes the row: a crash between is retried by the background task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from backends import SecretBackend
from spacesvc.audit import queries as audit
from spacesvc.audit.model import Action, Actor, Resource
from spacesvc.environments import queries as environments
from spacesvc.errors import Conflict, InvalidInput, NotFound, Unavailable
from spacesvc.keys import store
from spacesvc.keys.aws_iam import AwsIamIssuer
from spacesvc.keys.digitalocean import DigitalOceanIssuer
from spacesvc.keys.issuers import Issuer, Permission, key_name, unavailable
from spacesvc.keys.model import ACTIVE, EnvironmentKey, Grants, IssuerConfig
from spacesvc.keys.resource import KEY, RETIRED, ROTATED, get_issuer
from spacesvc.outbound import DEADLINE, Outbound
from spacesvc.settings import Settings
from spacesvc.spaces.model import not_configured

log = logging.getLogger("spacesvc.keys")

# A 'minting' row older than this was left by a crash: a mint takes at most the issuer's
# deadline, plus the time to store its secret.
MINTING_GRACE_SECONDS = DEADLINE + 20.0


@dataclass(frozen=True)
class Keys:
    """What the keys' work needs, in the service or on the command line."""

    acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
    backend: SecretBackend
    settings: Settings
    outbound: Outbound

    def client(self, issuer: IssuerConfig, secret: str) -> Issuer:
        prefix = self.settings.key_prefix
        if issuer.type == "digitalocean":
            return DigitalOceanIssuer(self.outbound, self.settings.digitalocean_api_url, secret, prefix=prefix)
        return AwsIamIssuer(
            self.outbound,
            self.settings.iam_endpoint,
            issuer.access_key or "",
            secret,
            region=issuer.region or "us-east-1",
            prefix=prefix,
        )

    async def issuer(self, conn: asyncpg.Connection, *, deleted_too: bool = False) -> Issuer | None:
        """The configured issuer's client (with its stored secret), or None."""
        config = await get_issuer(conn)
        if config is None or (config.deleted and not deleted_too):
            return None
        secret = await self.backend.read(conn, config.secret_location)
        if secret is None:
            raise unavailable("The key issuer's secret is not in the secret backend.", hint="PUT the issuer again.")
        return self.client(config, secret)

    # -- grants and minting ----------------------------------------------------------------------

    async def set_grants(
        self,
        environment_id: str,
        enabled: bool,
        buckets: tuple[str, ...] | Keep | None,
        permission: Permission | None,
        actor: Actor,
    ) -> Grants:
        """Enable or disable an environment with its grants (omitted: as stored; ``buckets`` None:
        all of the configuration's). With an issuer, enabling, or a change of grants while
        enabled, mints the environment's key first; a failure changes nothing."""
        async with self.acquire() as conn:
            config = await conn.fetchrow(store.SELECT_CONFIG)
            if config is None:
                raise not_configured()
            environment = await environments.get(conn, environment_id)
            row = await conn.fetchrow(store.SELECT_ONE_GRANTS, environment.id)
            before, was_enabled = store.grants_from(row), bool(row["enabled"])
            wanted = Grants(before.buckets if isinstance(buckets, Keep) else buckets, permission or before.permission)
            check_buckets(wanted, tuple(config["buckets"]))
            issuer = await self.issuer(conn)
            active = [key for key in await store.environment_keys(conn, environment.id) if key.state == ACTIVE]
        if enabled and issuer is not None and (not was_enabled or wanted != before or not active):
            await self.mint(issuer, environment.id, environment.name, wanted, actor, enable=True)
            return wanted
        async with self.acquire() as conn, conn.transaction():
            await store.lock_for_write(conn)
            config_id = await conn.fetchval("SELECT id::text FROM spaces_config")
            if config_id is None:
                raise not_configured()
            row = await conn.fetchrow(store.SELECT_ONE_GRANTS, environment.id)
            if row is None:
                raise NotFound("No environment has this id.", hint="GET /api/environments lists them.")
            if row["recorded"] and bool(row["enabled"]) == enabled and store.grants_from(row) == wanted:
                return wanted
            await conn.execute(
                store.UPSERT_GRANTS, config_id, environment.id, enabled, _array(wanted), wanted.permission
            )
            await store.bump_config(conn, actor.name)
            if bool(row["enabled"]) != enabled:
                action = Action.ENABLED if enabled else Action.DISABLED
                await audit.record(
                    conn, action, Resource.ENVIRONMENT, environment.id, actor, {"name": environment.name}
                )
        if not enabled:
            await self.delete_pending(first_try=True)
        return wanted

    async def mint(
        self,
        issuer: Issuer,
        environment_id: str,
        environment_name: str,
        grants: Grants,
        actor: Actor,
        *,
        enable: bool,
    ) -> EnvironmentKey:
        """Mint the environment's key and make it the one delivered (the previous one retires).
        ``enable``: also store the enablement with ``grants`` in the same transaction."""
        async with self.acquire() as conn:
            config = await conn.fetchrow(store.SELECT_CONFIG)
            if config is None:
                raise not_configured()
            configured = tuple(config["buckets"])
            counter = await conn.fetchval(store.NEXT_COUNTER)
            name = key_name(self.settings.key_prefix, environment_name, counter)
            intent = store.key_from(
                await conn.fetchrow(
                    store.INSERT_MINTING,
                    environment_id,
                    environment_name,
                    name,
                    list(grants.effective(configured)),
                    grants.permission,
                )
            )
        try:
            minted = await issuer.create_key(name, grants.for_issuer(configured))
        except Unavailable:
            async with self.acquire() as conn:
                await conn.execute(store.DROP_KEY, intent.id)
            raise
        try:
            async with self.acquire() as conn, conn.transaction():
                await store.lock_for_write(conn)
                if await conn.fetchrow(store.LOCK_MINTING, intent.id) is None:
                    raise Conflict("The environment changed while its key was minted; try again.")
                config_id = await conn.fetchval("SELECT id::text FROM spaces_config")
                if config_id is None:
                    raise not_configured()
                newly_enabled = False
                if enable:
                    newly_enabled = not await environments.is_enabled(conn, environment_id)
                    await conn.execute(
                        store.UPSERT_GRANTS, config_id, environment_id, True, _array(grants), grants.permission
                    )
                elif not await environments.is_enabled(conn, environment_id):
                    raise Conflict("The environment was disabled while its key was minted.")
                version = await store.bump_config(conn, actor.name)
                retired = await conn.fetch(
                    store.RETIRE_ACTIVE, environment_id, self.settings.key_overlap_seconds, intent.id
                )
                secret_version = await self.backend.write(conn, intent.secret_location, minted.secret_key)
                key = store.key_from(
                    await conn.fetchrow(
                        store.ACTIVATE,
                        intent.id,
                        minted.access_key,
                        self.backend.name,
                        secret_version,
                        minted.created_at,
                        version,
                    )
                )
                details = {"name": key.name, "accessKey": key.access_key, "environment": environment_name}
                if newly_enabled:
                    await audit.record(
                        conn, Action.ENABLED, Resource.ENVIRONMENT, environment_id, actor, {"name": environment_name}
                    )
                await audit.record(conn, Action.CREATED, KEY, key.id, actor, details)
                for old in map(store.key_from, retired):
                    await audit.record(
                        conn,
                        ROTATED,
                        KEY,
                        old.id,
                        actor,
                        {"name": old.name, "accessKey": old.access_key, "replacedBy": key.access_key},
                    )
        except BaseException:
            await self._undo_mint(issuer, intent, minted.access_key)
            raise
        return key

    async def _undo_mint(self, issuer: Issuer, intent: EnvironmentKey, access_key: str) -> None:
        """A minted key that was not recorded is deleted at once; if that fails, reconciliation
        deletes it (its row is gone, so spacesvc holds no record of it)."""
        try:
            await issuer.delete_key(access_key)
        except Unavailable as error:
            log.warning("key %s was minted but not recorded; reconciliation deletes it: %s", intent.name, error)
        async with self.acquire() as conn:
            await conn.execute(store.DROP_KEY, intent.id)

    async def rotate(self, environment_id: str, actor: Actor) -> EnvironmentKey:
        """A new key with the environment's grants; the current one retires (docs/keys.md)."""
        async with self.acquire() as conn:
            environment = await environments.get(conn, environment_id)
            row = await conn.fetchrow(store.SELECT_ONE_GRANTS, environment.id)
            if not row["enabled"]:
                raise NotFound(f"Spaces is not enabled for the environment {environment.name}.")
            issuer = await self.issuer(conn)
            if issuer is None:
                raise NotFound(
                    "No key issuer is configured: the environment is delivered the configuration's key, "
                    "which spacesvc does not rotate.",
                    hint="Set an issuer with PUT /api/settings/spaces/issuer.",
                )
        return await self.mint(issuer, environment.id, environment.name, store.grants_from(row), actor, enable=False)

    # -- deletion, retirement, rotation by age, reconciliation -------------------------------------

    async def delete_pending(self, *, first_try: bool = False) -> int:
        """Delete every key marked for deletion at the issuer, then its row and secret; returns
        how many remain. Failures are logged and retried by the next call."""
        async with self.acquire() as conn:
            pending = [store.key_from(row) for row in await conn.fetch(store.SELECT_DELETING)]
            if not pending:
                await self._drop_deleted_issuer(conn)
                return 0
            issuer = await self.issuer(conn, deleted_too=True)
        left = 0
        for key in pending:
            try:
                if key.access_key is not None:
                    if issuer is None:
                        raise unavailable("No key issuer is configured to delete the key with.")
                    await issuer.delete_key(key.access_key)
            except Unavailable as error:
                left += 1
                log.warning("key %s not deleted at the issuer yet (%s); retried", key.name, error)
                async with self.acquire() as conn:
                    await conn.execute(store.FAILED_ATTEMPT, key.id)
                continue
            async with self.acquire() as conn:
                async with conn.transaction():
                    await conn.execute(store.DROP_KEY, key.id)
                    await self.backend.delete(conn, key.secret_location)
                    if key.access_key is not None:
                        details = {"name": key.name, "accessKey": key.access_key, "environment": key.environment_name}
                        await audit.record(conn, Action.DELETED, KEY, key.id, SYSTEM, details)
                await self.backend.purge(key.secret_location)
        if left == 0:
            async with self.acquire() as conn:
                await self._drop_deleted_issuer(conn)
        elif first_try:
            log.info("%d key(s) left for deletion at the issuer by the background task", left)
        return left

    async def _drop_deleted_issuer(self, conn: asyncpg.Connection) -> None:
        config = await get_issuer(conn)
        if config is None or not config.deleted or await conn.fetchval(store.COUNT_KEYS):
            return
        async with conn.transaction():
            await conn.execute(store.REMOVE_ISSUER)
            await self.backend.delete(conn, config.secret_location)
        await self.backend.purge(config.secret_location)

    async def retire_due(self) -> None:
        """Rotated-out keys whose overlap ended, or whose environment's tokens all fetched the new
        key, go to deletion."""
        async with self.acquire() as conn, conn.transaction():
            for old in map(store.key_from, await conn.fetch(store.RETIRE_DUE)):
                details = {"name": old.name, "accessKey": old.access_key, "environment": old.environment_name}
                await audit.record(conn, RETIRED, KEY, old.id, SYSTEM, details)

    async def rotate_due(self) -> None:
        """Keys older than SPACESVC_KEY_MAX_AGE, and keys whose grants are no longer their
        environment's (the configuration's buckets changed), are rotated."""
        max_age = self.settings.key_max_age_seconds
        async with self.acquire() as conn:
            due = [store.key_from(row) for row in await conn.fetch(store.SELECT_OUTDATED_GRANTS)]
            if max_age is not None:
                due += [store.key_from(row) for row in await conn.fetch(store.SELECT_DUE_FOR_ROTATION, max_age)]
        for key in {key.id: key for key in due}.values():
            if key.environment_id is None:
                continue
            try:
                await self.rotate(key.environment_id, SYSTEM)
            except (Unavailable, NotFound, Conflict) as error:
                log.warning("key %s is due for rotation but not rotated yet: %s", key.name, error)

    async def reconcile(self) -> Reconciliation:
        """Prefixed keys at the issuer that spacesvc holds no record of are deleted; enabled
        environments without a key get one. Keys without the prefix are never touched."""
        done = Reconciliation()
        async with self.acquire() as conn:
            issuer = await self.issuer(conn)
            if issuer is None:
                return done
            await conn.fetch(store.STALE_MINTING, MINTING_GRACE_SECONDS)
            known = {row["access_key"] for row in await conn.fetch(store.SELECT_KNOWN_ACCESS_KEYS)}
            minting = {row["name"] for row in await conn.fetch(store.SELECT_MINTING_NAMES)}
        for found in await issuer.list_keys(self.settings.key_prefix):
            if found.access_key in known or found.name in minting:
                continue
            await issuer.delete_key(found.access_key)
            done.deleted.append(found.name)
            log.info("reconciliation: deleted key %s, which spacesvc holds no record of", found.name)
        async with self.acquire() as conn:
            missing = await conn.fetch(store.SELECT_ENABLED_WITHOUT_KEY)
        for row in missing:
            key = await self.mint(issuer, row["id"], row["name"], store.grants_from(row), SYSTEM, enable=False)
            done.created.append(key.name)
        return done

    async def background_pass(self, *, reconcile: bool) -> None:
        """One pass of the background work: retire, delete, rotate by age, and reconcile if asked."""
        await self.retire_due()
        await self.delete_pending()
        await self.rotate_due()
        if reconcile:
            await self.reconcile()


class Keep:
    """A field the request left out: the stored value stays."""


KEEP = Keep()


@dataclass
class Reconciliation:
    deleted: list[str]
    created: list[str]

    def __init__(self) -> None:
        self.deleted, self.created = [], []


SYSTEM = Actor("spacesvc")


def check_buckets(grants: Grants, configured: tuple[str, ...]) -> None:
    if grants.buckets is None:
        return
    unknown = [bucket for bucket in grants.buckets if bucket not in configured]
    if unknown:
        raise InvalidInput(
            f"buckets must be some of the configuration's buckets; not configured: {', '.join(unknown)}.",
            field="buckets",
            details={"buckets": [f"Not a configured bucket: {bucket}" for bucket in unknown]},
        )


def _array(grants: Grants) -> list[str] | None:
    return None if grants.buckets is None else list(grants.buckets)


def rotates_at(key: EnvironmentKey, max_age: float | None) -> datetime | None:
    return None if max_age is None else key.created_at.astimezone(UTC) + timedelta(seconds=max_age)
