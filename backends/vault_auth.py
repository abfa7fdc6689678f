"""The vault backend's authentication: one hvac client kept logged in and alive.

Three ways in: a static ``VAULT_TOKEN``, AppRole (the secret-id inline or from a file), and
Vault's Kubernetes auth method (the service-account token file). A login method's token is
renewed before it expires and replaced by a new login when it can no longer be renewed or is
gone (revoked, expired); the token it replaces is revoked, so none is left behind.

A refused login backs off (``LoginSettings.login_backoff``): Vault's user lockout (AppRole:
5 failures, each within 15 minutes of the previous one, lock the role for 15 minutes) must
never be reached by a stale credential. A credential file whose content changes is tried at
once, whatever the back-off.

Thread-safe; every method runs in the backend's thread pool, never on the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import hvac
import hvac.exceptions
import requests

from backends.errors import BackendUnavailable

log = logging.getLogger("spacesvc.vault")

NEVER = float("inf")
# One way to say that a static VAULT_TOKEN came to its end, whichever side noticed first.
TOKEN_GONE = "VAULT_TOKEN has expired or was revoked (Vault does not know it), and cannot be renewed or replaced"
REFUSED = (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized, hvac.exceptions.InvalidRequest)


def is_policy_denial(error: hvac.exceptions.Forbidden) -> bool:
    """A 403 for a valid token whose policy lacks the path, as opposed to a token Vault no longer
    knows (revoked or expired). Vault wraps an ACL denial in an error list ("1 error occurred:
    * permission denied") and answers an unknown token with a bare "permission denied" (newer
    Vaults add "invalid token")."""
    text = " ".join(str(message) for message in error.errors or ())
    return "invalid token" not in text and "error occurred" in text


class LoginSettings(Protocol):
    """What a session needs of the vault backend's settings (``backends.vault.VaultSettings``)."""

    @property
    def addr(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def role_id(self) -> str | None: ...
    @property
    def secret_id(self) -> str | None: ...
    @property
    def secret_id_file(self) -> str | None: ...
    @property
    def k8s_role(self) -> str | None: ...
    @property
    def k8s_token_file(self) -> str: ...
    @property
    def k8s_mount(self) -> str: ...
    @property
    def login_backoff(self) -> tuple[float, ...]: ...
    @property
    def logs_in(self) -> bool: ...
    @property
    def auth_method_name(self) -> str: ...
    @property
    def client_certificate(self) -> tuple[str, str] | None: ...


class VaultSession:
    """One authenticated hvac client, kept alive: renewed before expiry, logged in again when due."""

    def __init__(self, config: LoginSettings, verify: Callable[[], bool | str]) -> None:
        self._config = config
        self._verify = verify  # requests' ``verify``: True, False, or a CA bundle's path
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._expires_at = NEVER  # time.monotonic() deadline of the current token
        self._period = NEVER  # the token's last granted TTL
        self._renewable = False
        # refused logins in a row, when the next may be tried, and which credential was refused
        self._refusals = 0
        self._retry_at = 0.0
        self._refused: bytes | None = None
        self._next_attempt = ""
        self.problem: str | None = None  # why authentication fails now; safe to show

    @property
    def refresh_interval(self) -> float:
        return 30.0 if self._period == NEVER else min(max(self._period / 4, 0.5), 60.0)

    @property
    def seconds_left(self) -> float:
        return self._expires_at - time.monotonic()

    def unauthenticated_client(self) -> hvac.Client:
        return hvac.Client(
            url=self._config.addr,
            token="",  # never hvac's fallback to VAULT_TOKEN / ~/.vault-token: we pass it
            verify=self._verify(),
            cert=self._config.client_certificate,
            timeout=self._config.timeout,
            namespace=self._config.namespace,
        )

    def client(self) -> hvac.Client:
        """An authenticated client, refreshing the token first when it is due."""
        with self._lock:
            if self._client is None:
                self._client = self._login() if self._config.logs_in else self._static_token()
            elif self.seconds_left < self._period / 2:
                self._refresh(self._client)
            return self._client

    def token_gone(self, client: hvac.Client) -> bool:
        """After a 403: whether the token itself is gone (revoked, expired), not merely denied."""
        try:
            client.auth.token.lookup_self()
        except hvac.exceptions.Forbidden as error:
            return not is_policy_denial(error)
        return False

    def replace_gone_token(self, gone: hvac.Client) -> hvac.Client:
        """The token of ``gone`` is revoked or expired: log in again at once (login methods), or
        say so (a static VAULT_TOKEN cannot be replaced)."""
        with self._lock:
            if self._client is not None and self._client is not gone:
                return self._client  # another call has replaced it already
            self._client = None
            if not self._config.logs_in:
                self.problem = TOKEN_GONE
                raise BackendUnavailable(self.problem, hint=self._token_hint())
            log.info("vault: the token was revoked or has expired; logging in again")
            self._client = self._login()
            return self._client

    def revoke(self) -> None:
        """On shutdown: revoke a token this process logged in for (never a static VAULT_TOKEN)."""
        with self._lock:
            if self._client is not None and self._config.logs_in:
                self._revoke_quietly(self._client)
            self._client = None

    # -- under the lock --------------------------------------------------------------------------

    def _static_token(self) -> hvac.Client:
        client = self.unauthenticated_client()
        client.token = self._config.token
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden as error:
            if not is_policy_denial(error):
                self.problem = TOKEN_GONE
                raise BackendUnavailable(self.problem, hint=self._token_hint()) from None
            data = {}  # a token without the default policy may not look itself up
        if data.get("expire_time") and not data.get("ttl"):
            # past its TTL, not yet revoked by Vault: gone all the same (a ttl of 0 alone means never)
            self.problem = TOKEN_GONE
            raise BackendUnavailable(self.problem, hint=self._token_hint())
        self._set_lease(int(data.get("ttl") or 0), bool(data.get("renewable")))
        if data.get("accessor"):
            log.info("vault: using VAULT_TOKEN, token accessor %s", data["accessor"])
        self.problem = None
        return client

    def _login(self) -> hvac.Client:
        """A client freshly logged in with AppRole or Kubernetes auth; within the back-off."""
        credential = self._credential()
        fingerprint = hashlib.sha256(credential.encode()).digest()
        now = time.monotonic()
        if self._refusals and fingerprint == self._refused and now < self._retry_at:
            assert self.problem is not None
            raise BackendUnavailable(self.problem, hint=self._refusal_hint())
        client = self.unauthenticated_client()
        try:
            if self._config.k8s_role is not None:
                auth = client.auth.kubernetes.login(
                    role=self._config.k8s_role, jwt=credential, mount_point=self._config.k8s_mount
                )["auth"]
            else:
                auth = client.auth.approle.login(role_id=self._config.role_id, secret_id=credential)["auth"]
        except REFUSED as error:
            self._refusals = self._refusals + 1 if fingerprint == self._refused else 1
            self._refused = fingerprint
            delay = self._config.login_backoff[min(self._refusals, len(self._config.login_backoff)) - 1]
            self._retry_at = now + delay
            # the same words until the next attempt: readiness and the log repeat nothing
            self._next_attempt = datetime.fromtimestamp(time.time() + delay, UTC).strftime("%H:%M:%SZ")
            self.problem = self._refusal(error)
            log.warning("vault: %s (%d in a row; next attempt in %.0fs)", self.problem, self._refusals, delay)
            raise BackendUnavailable(self.problem, hint=self._refusal_hint()) from None
        self._refusals, self._refused = 0, None
        self._set_lease(int(auth["lease_duration"]), bool(auth["renewable"]))
        # not a credential: it cannot authenticate, but an operator can revoke the token with it
        log.info(
            "vault: logged in with %s; token accessor %s (revoke: bao token revoke -accessor %s)",
            self._config.auth_method_name,
            auth["accessor"],
            auth["accessor"],
        )
        self.problem = None
        return client

    def _credential(self) -> str:
        """The secret-id or service-account token, read afresh from its file at every login."""
        config = self._config
        if config.k8s_role is None and config.secret_id is not None:
            return config.secret_id
        variable, path = (
            ("SPACESVC_VAULT_K8S_TOKEN_FILE", config.k8s_token_file)
            if config.k8s_role is not None
            else ("SPACESVC_VAULT_SECRET_ID_FILE", config.secret_id_file)
        )
        assert path is not None
        try:
            credential = Path(path).read_text().strip()
        except OSError as error:
            self.problem = f"{variable}={path} cannot be read ({type(error).__name__})"
            raise BackendUnavailable(self.problem, hint=f"Deliver the file {variable} names.") from None
        if not credential:
            self.problem = f"{variable}={path} is empty"
            raise BackendUnavailable(self.problem, hint=f"Deliver the file {variable} names.")
        return credential

    def _refresh(self, client: hvac.Client) -> None:
        if self._renewable:
            try:
                auth = client.auth.token.renew_self()["auth"]
                previous = self._period
                self._set_lease(auth["lease_duration"], auth["renewable"])
                if self._period >= previous / 2:
                    return
                # the token reached its max TTL: renewing no longer extends it
                self._renewable = False
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                self._renewable = False
            except hvac.exceptions.InternalServerError as error:
                # OpenBao answers 500 "past the max TTL, cannot renew" in the last moments of a token
                if not any("max TTL" in str(message) for message in error.errors or ()):
                    raise
                self._renewable = False
        if self._config.logs_in:
            log.info("vault: logging in again with %s", self._config.auth_method_name)
            replacement = self._login()
            self._revoke_quietly(client)
            self._client = replacement
            return
        if self.seconds_left <= 0:
            self._client = None  # each call asks Vault again, in the same words
            self.problem = TOKEN_GONE
            raise BackendUnavailable(self.problem, hint=self._token_hint())

    def _revoke_quietly(self, client: hvac.Client) -> None:
        try:
            client.auth.token.revoke_self()
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as error:
            log.debug("vault: revoking the replaced token failed: %s", type(error).__name__)

    def _set_lease(self, ttl: int, renewable: bool) -> None:
        self._period = float(ttl) if ttl > 0 else NEVER
        self._expires_at = time.monotonic() + self._period
        self._renewable = bool(renewable) and ttl > 0

    # -- words for the operator ----------------------------------------------------------------

    def _refusal(self, error: BaseException) -> str:
        how = self._config.auth_method_name
        if isinstance(error, hvac.exceptions.InvalidRequest):
            what = (
                "the role or its binding does not accept this service-account token"
                if self._config.k8s_role is not None
                else "invalid role-id or secret-id"
            )
        else:
            what = "permission denied: the credential is wrong, or the role is locked out after repeated failures"
        return f"Vault refused the {how} login ({what})"

    def _refusal_hint(self) -> str:
        config = self._config
        if config.k8s_role is not None:
            fix = (
                f"Check SPACESVC_VAULT_K8S_ROLE={config.k8s_role} (bound service account and namespace) and "
                f"the auth method's config at auth/{config.k8s_mount}; a new token in "
                "SPACESVC_VAULT_K8S_TOKEN_FILE is tried at once."
            )
        elif config.secret_id_file is not None:
            fix = (
                "Write a valid secret-id to SPACESVC_VAULT_SECRET_ID_FILE (tried at once, no restart), and check "
                "SPACESVC_VAULT_ROLE_ID."
            )
        else:
            fix = "Check SPACESVC_VAULT_ROLE_ID and SPACESVC_VAULT_SECRET_ID (a new one needs a restart, or use "
            fix += "SPACESVC_VAULT_SECRET_ID_FILE)."
        return (
            f"{fix} Logins are retried sparingly (next at {self._next_attempt}) so that this process never "
            "reaches Vault's user lockout (5 failed logins, each within 15 minutes of the previous one); if the "
            "role is locked, `bao read sys/locked-users` lists it and `bao write -f "
            "sys/locked-users/<mount_accessor>/unlock/<alias_identifier>` unlocks it."
        )

    def _token_hint(self) -> str:
        return (
            "Give the service a new, renewable VAULT_TOKEN and restart it, or use AppRole or Kubernetes auth, "
            "which log in again by themselves."
        )
