"""Domain errors: what the data layer, the backends and the configuration raise.

They say what went wrong in the service's own terms and know nothing of HTTP; the envelope
middleware maps each class to a status and code in one table (``spacesvc.http.errors``), and
the command line prints ``str(error)`` as one line. No message here ever holds a secret.

The roots (``ConfigError``, ``DomainError``, ``Unavailable``) live with the secret backends'
errors in ``backends.errors``, the lowest layer, and are re-exported here.
"""

from __future__ import annotations

from backends.errors import ConfigError, DomainError, Unavailable


class NotFound(DomainError):
    """The thing asked for does not exist (nothing configured, no such environment)."""


class InvalidInput(DomainError):
    """The input cannot be accepted as it is (``details``: every failing field)."""


class Conflict(DomainError):
    """The request clashes with the current state (a name that is taken)."""


class PreconditionFailed(DomainError):
    """A conditional write's condition (If-Match, If-None-Match) does not hold."""


__all__ = ["ConfigError", "Conflict", "DomainError", "InvalidInput", "NotFound", "PreconditionFailed", "Unavailable"]
