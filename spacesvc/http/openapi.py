"""The OpenAPI 3 document and Swagger UI, built by aiohttp-apispec from the handlers' ``@docs``.

aiohttp-apispec 3.0.0b2 builds an OpenAPI 2 spec; ``OpenApi3Spec`` swaps in a 3.0 APISpec and
keeps the route discovery. Operations are described in OpenAPI 3 terms (``requestBody``,
``content``) with marshmallow schemas that the plugin resolves to refs.

The Swagger UI page is the service's own, on the assets of a maintained Swagger UI 5 release
(the ``swagger-ui-py`` package ships them): aiohttp-apispec bundles Swagger UI 4.1.0, which lets
``?url=`` load another document into a page on the service's origin. The page shows this
service's document only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui
from aiohttp import web
from apispec import APISpec
from marshmallow import Schema

from spacesvc.http.errors import STATUS
from spacesvc.http.private_api import OperationHookSpec
from spacesvc.http.schemas import ErrorSchema

DOCS_PATH = "/api/docs"
DOCS_STATIC_PATH = f"{DOCS_PATH}/static"
SWAGGER_UI_ASSETS = Path(swagger_ui.__file__).parent / "static"
OPENAPI_PATH = "/api/docs/openapi.json"
JSON = "application/json"

ERROR_DESCRIPTIONS = {
    400: "Malformed input, failed validation or unknown field (VALIDATION_ERROR).",
    401: "Missing, malformed, unknown, expired or revoked token (UNAUTHORIZED).",
    403: "The token's role (FORBIDDEN_ROLE) or scopes (FORBIDDEN_SCOPE) do not permit this.",
    404: "Nothing configured, or no such route (NOT_FOUND).",
    405: "Method not allowed; see the Allow header (VALIDATION_ERROR).",
    408: "The request body did not arrive in time; the connection is closed (VALIDATION_ERROR).",
    409: "IDEMPOTENCY_KEY_REUSED (same key, other request), or CONFLICT (that key's first request still in "
    "flight; see Retry-After).",
    412: "If-Match / If-None-Match precondition failed (CONFLICT).",
    413: "Request body over 64 KiB (VALIDATION_ERROR).",
    415: "Request body is not application/json, or its Content-Encoding is not supported (VALIDATION_ERROR).",
    422: "A read-only field was sent (READONLY_FIELD).",
    429: "Over the rate limit (RATE_LIMITED); see Retry-After, RateLimit-Policy and RateLimit.",
    500: "Unexpected error (INTERNAL); quote the requestId.",
    503: "PostgreSQL or the secret backend is unavailable (SERVICE_UNAVAILABLE); see Retry-After.",
}
Headers = dict[str, dict[str, Any]]

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

RETRY_AFTER: Headers = {
    "Retry-After": {"schema": {"type": "integer"}, "required": True, "description": "seconds to wait"}
}
REQUEST_ID: Headers = {
    "X-Request-ID": {"schema": {"type": "string"}, "required": True, "description": "req_<ULID>, also in the log"}
}


RATE_LIMIT_HEADERS: Headers = {
    "RateLimit-Policy": {"schema": {"type": "string"}, "description": 'e.g. "requests";q=600;w=60'},
    "RateLimit": {"schema": {"type": "string"}, "description": 'e.g. "requests";r=599;t=1'},
}
IDEMPOTENCY_KEY_PARAM = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    # 1-255 printable ASCII; HTTP trims a header's outer spaces, so none is at either end
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e](?:[\\x20-\\x7e]{0,253}[\\x21-\\x7e])?$"},
    "description": "Retry-safe writes: a 2xx result is kept 24 h per token and replayed for the same key "
    "and body (with Idempotent-Replayed: true).",
}
REPLAYED: Headers = {
    "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}, "description": "on a replay"}
}


def etag_header(*, always: bool) -> dict[str, Any]:
    when = "" if always else " Present when a configuration is returned."
    return {
        "ETag": {
            "schema": {"type": "string"},
            "required": always,
            "description": f'The configuration version, quoted: "<version>".{when}',
        }
    }


def ok(
    schema: type[Schema],
    description: str,
    *,
    etag: dict[str, Any] | None = None,
    replayable: bool = False,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = {**REQUEST_ID, **RATE_LIMIT_HEADERS, **(etag or {}), **(REPLAYED if replayable else {})}
    response = {"description": description, "headers": headers, "content": {JSON: {"schema": schema}}}
    if links:
        response["links"] = links
    return response


def errors(*statuses: int) -> dict[int, dict[str, Any]]:
    """Envelope responses for the given statuses (500 is always added)."""
    documented = {}
    for status in sorted({*statuses, 500}):
        headers: Headers = {**REQUEST_ID, **(RETRY_AFTER if status == 503 else {})}
        if status == 401:
            headers["WWW-Authenticate"] = {"schema": {"type": "string"}, "required": True}
        if status == 405:
            headers["Allow"] = {"schema": {"type": "string"}, "required": True}
        if status == 429:
            headers.update({**RETRY_AFTER, **RATE_LIMIT_HEADERS})
        documented[status] = {
            "description": ERROR_DESCRIPTIONS[status],
            "headers": headers,
            "content": {JSON: {"schema": ErrorSchema}},
        }
    return documented


def json_body(schema: Schema | type[Schema], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


class OpenApi3Spec(OperationHookSpec):
    def __init__(self, *, title: str, version: str) -> None:
        super().__init__(
            url=OPENAPI_PATH, swagger_path=DOCS_PATH, static_path=DOCS_STATIC_PATH, title=title, version=version
        )
        self.spec = APISpec(
            title=title,
            version=version,
            openapi_version="3.0.3",
            plugins=(self.plugin,),
            info={
                "description": "Global Spaces / S3 configuration; BRIDGEPORT-compatible. "
                "Every error uses the envelope schema Error. "
                f"Codes and statuses: {', '.join(f'{c.value} {s}' for c, s in STATUS.items())}."
            },
        )
        self.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})

    def add_docs_page(self, app: web.Application, static_path: str, view_path: str) -> None:
        page = SWAGGER_PAGE.replace("{static}", static_path).replace("{document}", self.url)

        async def swagger_view(request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html")

        app.router.add_static(static_path, SWAGGER_UI_ASSETS)
        app.router.add_get(view_path, swagger_view)

    def add_operation(self, data: dict[str, Any], method: str, url_path: str) -> None:
        if method == "head":
            return  # HEAD is answered wherever GET is; one operation (and operationId) per route
        operation = {k: v for k, v in data.items() if k not in ("produces", "schemas")}
        if not operation.get("parameters"):
            operation.pop("parameters", None)
        self.spec.path(path=url_path, operations={method: operation})


# Swagger UI 5 reads no configuration from the page's query string (queryConfigEnabled is off).
SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>spacesvc API</title>
    <link rel="stylesheet" type="text/css" href="{static}/swagger-ui.css">
    <link rel="icon" type="image/png" href="{static}/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{static}/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="{static}/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {
        window.ui = SwaggerUIBundle({
          url: "{document}",
          dom_id: "#swagger-ui",
          queryConfigEnabled: false,
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          layout: "StandaloneLayout",
        });
      };
    </script>
  </body>
</html>
"""


def setup_openapi(app: web.Application, version: str) -> None:
    OpenApi3Spec(title="spacesvc", version=version).register(app, in_place=True)
