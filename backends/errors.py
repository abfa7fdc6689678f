"""The errors of the secret backends, and the roots the service's own errors grow from.

The lowest layer of the service: it imports nothing, so a backend depends on this module alone.
``spacesvc.errors`` re-exports ``ConfigError``, ``DomainError`` and ``Unavailable`` beside the
service's other domain errors. None of them knows HTTP; no message here ever holds a secret.
"""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(Exception):
    """A configuration problem; str(error) names the variable and is safe to print."""


class DomainError(Exception):
    """Something a caller can be told: a message, and where useful the input and a hint."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        details: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.details = dict(details or {})


class Unavailable(DomainError):
    """A dependency (``database``, ``secret_backend``, ``storage``) cannot serve in time."""

    def __init__(self, dependency: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.dependency = dependency
        # logged already where it was detected (once per change of state): not again per request
        self.logged = False


class BackendUnavailable(Unavailable):
    """The backend cannot serve right now; answered as 503 SERVICE_UNAVAILABLE.

    The message must never contain the secret or any credential.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__("secret_backend", message, hint=hint)


class SecretUnreadable(BackendUnavailable):
    """A secret is stored but cannot be read back (e.g. its encryption key is missing)."""


class ReadOnlyBackend(Exception):
    """A write was attempted on a backend whose secret is not set through the API."""
