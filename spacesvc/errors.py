"""One way to fail: every error is an ``ApiError``; one middleware turns it into the envelope."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


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

RETRY_AFTER_SECONDS = 5


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
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint
        self.status = status if status is not None else STATUS[code]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

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
) -> ApiError:
    extra = {"errors": dict(errors)} if errors else None
    return ApiError(
        ErrorCode.VALIDATION_ERROR, message, field=field, hint=hint, status=status, headers=headers, extra=extra
    )


def readonly_field(field: str, method: str, hint: str | None = None) -> ApiError:
    return ApiError(
        ErrorCode.READONLY_FIELD,
        f'Field "{field}" is read-only and cannot be set via {method}.',
        field=field,
        hint=hint,
    )


def not_found(message: str, hint: str | None = None) -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, message, hint=hint)


def not_configured() -> ApiError:
    return not_found("The Spaces configuration is not set.", hint="Create it first with PUT /api/settings/spaces.")


class DependencyUnavailable(ApiError):
    """PostgreSQL, the secret backend or the storage endpoint did not answer in time, or cannot serve."""

    def __init__(self, dependency: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            ErrorCode.SERVICE_UNAVAILABLE,
            message,
            hint=hint or "Retry in a few seconds; GET /readyz names the failing dependency.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            extra={"dependency": dependency},
        )
        self.dependency = dependency


def internal_error() -> ApiError:
    return ApiError(
        ErrorCode.INTERNAL,
        "An unexpected error occurred.",
        hint="Quote the requestId when reporting this; the server log has the details.",
    )
