"""One way to fail: every error becomes an ``ApiError``, which one middleware turns into the
envelope. The tables here are the only place that knows codes and statuses: ``STATUS`` for each
code, ``DOMAIN_CODES`` for each domain error the data layer and the backends raise."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from spacesvc.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed, Unavailable


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    READONLY_FIELD = "READONLY_FIELD"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN_ROLE = "FORBIDDEN_ROLE"
    FORBIDDEN_SCOPE = "FORBIDDEN_SCOPE"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    RATE_LIMITED = "RATE_LIMITED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL = "INTERNAL"


# The default HTTP status of each code; a few take another status in a specific case
# (VALIDATION_ERROR 405/413/415, CONFLICT 412), passed explicitly where raised.
STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.READONLY_FIELD: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN_ROLE: 403,
    ErrorCode.FORBIDDEN_SCOPE: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

# Each domain error's code, and its status where that is not the code's default.
DOMAIN_CODES: Mapping[type[DomainError], tuple[ErrorCode, int | None]] = {
    NotFound: (ErrorCode.NOT_FOUND, None),
    InvalidInput: (ErrorCode.VALIDATION_ERROR, None),
    Conflict: (ErrorCode.CONFLICT, None),
    PreconditionFailed: (ErrorCode.CONFLICT, 412),
    Unavailable: (ErrorCode.SERVICE_UNAVAILABLE, None),
}

RETRY_AFTER_SECONDS = 5


class ClientDisconnected(Exception):
    """The client went away before its request was read: nobody to answer, and not our failure."""


class ApiError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint
        self.status = status if status is not None else STATUS[code]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        # after answering, close the connection (its request was not read to the end)
        self.close_connection = close_connection

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.hint is not None:
            body["hint"] = self.hint
        body.update(self.extra)
        body["requestId"] = request_id
        return body


def validation_error(
    message: str,
    *,
    field: str | None = None,
    hint: str | None = None,
    errors: Mapping[str, list[str]] | None = None,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    close_connection: bool = False,
) -> ApiError:
    extra = {"errors": dict(errors)} if errors else None
    return ApiError(
        ErrorCode.VALIDATION_ERROR,
        message,
        field=field,
        hint=hint,
        status=status,
        headers=headers,
        extra=extra,
        close_connection=close_connection,
    )


def readonly_field(field: str, method: str, hint: str | None = None) -> ApiError:
    return ApiError(
        ErrorCode.READONLY_FIELD,
        f'Field "{field}" is read-only and cannot be set via {method}.',
        field=field,
        hint=hint,
    )


def from_domain(error: DomainError) -> ApiError:
    """The envelope for a domain error, by the first of its classes in DOMAIN_CODES."""
    code, status = next(DOMAIN_CODES[kind] for kind in type(error).__mro__ if kind in DOMAIN_CODES)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    hint = error.hint
    if error.details:
        extra["errors"] = error.details
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        extra["dependency"] = error.dependency
        hint = hint or "Retry in a few seconds; GET /readyz names the failing dependency."
    return ApiError(code, error.message, field=error.field, hint=hint, status=status, headers=headers, extra=extra)


def internal_error() -> ApiError:
    return ApiError(
        ErrorCode.INTERNAL,
        "An unexpected error occurred.",
        hint="Quote the requestId when reporting this; the server log has the details.",
    )
