"""Domain errors: what the data layer, the backends and the configuration raise.

They say what went wrong in the service's own terms and know nothing of HTTP; the envelope
middleware maps each class to a status and code in one table (``spacesvc.http.errors``), and
the command line prints ``str(error)`` as one line. No message here ever holds a secret.
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


class NotFound(DomainError):
    """The thing asked for does not exist (nothing configured, no such environment)."""


class InvalidInput(DomainError):
    """The input cannot be accepted as it is (``details``: every failing field)."""


class Conflict(DomainError):
    """The request clashes with the current state (a name that is taken)."""


class PreconditionFailed(DomainError):
    """A conditional write's condition (If-Match, If-None-Match) does not hold."""


class Unavailable(DomainError):
    """A dependency (``database``, ``secret_backend``, ``storage``) cannot serve in time."""

    def __init__(self, dependency: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.dependency = dependency
        # logged already where it was detected (once per change of state): not again per request
        self.logged = False
