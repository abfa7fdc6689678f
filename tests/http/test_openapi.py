"""/api/docs and its OpenAPI 3 document, checked against what the service really answers."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from tests.support.api import BODY, BUCKETS, SPACES, TEST, Tokens, auth, create_environment, credentials_path, enable


def inline_refs(node: Any, spec: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return inline_refs(spec["components"]["schemas"][name], spec)
        return {key: inline_refs(value, spec) for key, value in node.items()}
    if isinstance(node, list):
        return [inline_refs(item, spec) for item in node]
    return node


async def test_the_document_is_valid_openapi_3(client: TestClient) -> None:
    resp = await client.get("/api/docs/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    validate_spec(spec)


async def test_swagger_ui_is_served_from_a_maintained_5_release(client: TestClient) -> None:
    """The bundled 4.1.0 let ?url= load any document into a page on this origin (CVE-2021-46708)."""
    resp = await client.get("/api/docs", params={"url": "https://attacker.example/spec.json"})
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert 'url: "/api/docs/openapi.json"' in page and "attacker" not in page
    assert "queryConfigEnabled: false" in page
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert "/api/docs/static/swagger-ui-bundle.js" in scripts
    for script in scripts:
        asset = await client.get(script)
        assert asset.status == 200
    bundle = await (await client.get("/api/docs/static/swagger-ui-bundle.js")).text()
    version = re.search(r'PACKAGE_VERSION:"([0-9.]+)"', bundle)
    assert version is not None and int(version[1].split(".")[0]) >= 5
    stylesheet = await client.get("/api/docs/static/swagger-ui.css")
    assert stylesheet.status == 200


async def test_every_operation_documents_its_errors_with_the_envelope(client: TestClient) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()
    spaces = spec["paths"][SPACES]
    assert set(spaces) == {"get", "put", "patch", "delete"}
    for method, operation in spaces.items():
        assert {"401", "403", "500", "503"} <= set(operation["responses"]), method
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    for method in ("put", "patch", "delete"):
        assert {"409", "412", "429", "503"} <= set(spaces[method]["responses"]), method
        assert "Idempotency-Key" in {p["name"] for p in spaces[method]["parameters"]}
        assert "If-Match" in {p["name"] for p in spaces[method]["parameters"]}
    assert "429" in spaces["get"]["responses"]
    assert {"201", "400", "412", "413", "415", "422"} <= set(spaces["put"]["responses"])
    assert "404" in spaces["patch"]["responses"] and "404" in spaces["delete"]["responses"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]


async def test_real_responses_match_the_documented_schemas(client: TestClient, tokens: Tokens) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()
    admin = auth(await tokens.create("admin"))
    viewer = auth(await tokens.create("viewer", ("settings:read",)))
    exchanges = [
        ("get", SPACES, lambda: client.get(SPACES, headers=admin)),
        ("post", TEST, lambda: client.post(TEST, headers=admin)),
        ("get", BUCKETS, lambda: client.get(BUCKETS, headers=viewer)),
        ("put", SPACES, lambda: client.put(SPACES, json=BODY, headers=admin)),
        ("get", BUCKETS, lambda: client.get(BUCKETS, headers=viewer)),
        ("put", SPACES, lambda: client.put(SPACES, json=BODY, headers=admin)),
        ("get", SPACES, lambda: client.get(SPACES, headers=viewer)),
        ("patch", SPACES, lambda: client.patch(SPACES, json={"region": "nyc3"}, headers=admin)),
        ("put", SPACES, lambda: client.put(SPACES, json={**BODY, "region": "BAD_"}, headers=admin)),
        ("put", SPACES, lambda: client.put(SPACES, json={**BODY, "version": 3}, headers=admin)),
        ("put", SPACES, lambda: client.put(SPACES, json=BODY, headers=viewer)),
        ("get", SPACES, lambda: client.get(SPACES)),
        ("patch", SPACES, lambda: client.patch(SPACES, json={}, headers={**admin, "If-Match": '"99"'})),
        (
            "patch",
            SPACES,
            lambda: client.patch(SPACES, json={"region": "sgp1"}, headers={**admin, "Idempotency-Key": "a"}),
        ),
        (
            "patch",
            SPACES,
            lambda: client.patch(SPACES, json={"region": "sfo3"}, headers={**admin, "Idempotency-Key": "a"}),
        ),
        ("delete", SPACES, lambda: client.delete(SPACES, headers=admin)),
        ("delete", SPACES, lambda: client.delete(SPACES, headers=admin)),
        ("get", "/healthz", lambda: client.get("/healthz")),
        ("get", "/readyz", lambda: client.get("/readyz")),
    ]
    seen = set()
    for method, path, call in exchanges:
        resp = await call()
        documented = spec["paths"][path][method]["responses"]
        assert str(resp.status) in documented, (method, path, resp.status)
        schema = inline_refs(documented[str(resp.status)]["content"]["application/json"]["schema"], spec)
        OAS30Validator(schema).validate(await resp.json())
        for header, description in documented[str(resp.status)].get("headers", {}).items():
            if description.get("required"):
                assert header in resp.headers, (method, path, resp.status, header)
        seen.add(resp.status)
    assert seen >= {200, 201, 400, 401, 403, 404, 409, 412, 422}


async def test_credentials_and_audit_log_answers_match_their_documented_schemas(
    client: TestClient, tokens: Tokens
) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()
    admin = auth(await tokens.create("admin"))
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    exchanges = [
        ("/api/environments/{id}/spaces/credentials", credentials_path(prod), {}, workload),
        ("/api/spaces/credentials", "/api/spaces/credentials", {"format": "credential-process"}, workload),
        ("/api/spaces/credentials", "/api/spaces/credentials", {"format": "xml"}, workload),
        ("/api/audit-logs", "/api/audit-logs", {"environmentId": prod}, admin),
    ]
    for template, path, query, headers in exchanges:
        resp = await client.get(path, params=query, headers=headers)
        documented = spec["paths"][template]["get"]["responses"]
        assert str(resp.status) in documented, (path, query, resp.status)
        schema = inline_refs(documented[str(resp.status)]["content"]["application/json"]["schema"], spec)
        OAS30Validator(schema).validate(await resp.json())
