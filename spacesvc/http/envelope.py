"""The error envelope: every failure becomes the one JSON error body, at the pipeline's edge
(``spacesvc.http.pipeline``)."""

from __future__ import annotations

import logging

from aiohttp import web

from spacesvc.errors import DomainError, Unavailable
from spacesvc.http.errors import ApiError, ClientDisconnected, ErrorCode, from_domain, internal_error, validation_error
from spacesvc.http.jsonio import json_response
from spacesvc.http.request_context import REQUEST_ID
from spacesvc.settings import SETTINGS

error_log = logging.getLogger("spacesvc.error")
dependency_log = logging.getLogger("spacesvc.dependency")


def answer_failure(request: web.Request, failure: Exception) -> web.StreamResponse:
    """The envelope of ``failure``; a client that went away, or an HTTP redirect, is raised again."""
    try:
        raise failure
    except ApiError as error:
        return error_response(request, error)
    except DomainError as error:
        if isinstance(error, Unavailable) and error.dependency != "database" and not error.logged:
            # the database (spacesvc.postgres) and Vault log their own unavailability where it is
            # detected, once per change
            dependency_log.warning(
                "%s unavailable: %s",
                error.dependency,
                error,
                extra={"requestId": request[REQUEST_ID], "dependency": error.dependency},
            )
        return error_response(request, from_domain(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(request, from_http_exception(request, error))
    except ClientDisconnected:
        raise
    except Exception:
        error_log.exception("unhandled error", extra={"requestId": request[REQUEST_ID]})
        return error_response(request, internal_error())


def error_response(request: web.Request, error: ApiError) -> web.Response:
    headers = dict(error.headers)
    if error.code is ErrorCode.UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="spacesvc"')
    response = json_response(error.body(request[REQUEST_ID]), status=error.status, headers=headers)
    if error.close_connection:
        response.force_close()
    return response


def from_http_exception(request: web.Request, error: web.HTTPException) -> ApiError:
    """aiohttp's own 404, 405, 413 … in the envelope."""
    if error.status == 404:
        return ApiError(
            ErrorCode.NOT_FOUND, "No such route.", hint="The API lives under /api/settings/spaces; see /api/docs."
        )
    if error.status == 405:
        allowed = error.headers.get("Allow", "")
        return validation_error(
            f"This route does not accept that method; allowed: {allowed}.",
            status=405,
            headers={"Allow": allowed},
        )
    if error.status == 413:
        limit = request.app[SETTINGS].max_body_bytes
        return validation_error(
            f"The request body is too large (at most {_size(limit)}).", status=413, hint=f"Send at most {limit} bytes."
        )
    if error.status == 415:
        return validation_error("The request body must be JSON (Content-Type: application/json).", status=415)
    if error.status >= 500:
        return internal_error()
    return validation_error(error.reason or "Bad request.", status=error.status)


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
