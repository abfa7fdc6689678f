"""HEAD is answered wherever GET is (docs/api.md): the GET's status and headers, no body."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.support.api import BODY, SPACES, Tokens, auth, create_environment, enable

UNDOCUMENTED_GETS = ("/api/docs", "/api/docs/openapi.json", "/healthz", "/readyz", "/metrics")


async def test_every_get_route_answers_head_without_a_body(client: TestClient, admin: dict, tokens: Tokens) -> None:
    await client.put(SPACES, json=BODY, headers=admin)
    prod = await create_environment(client, admin, "prod")
    await enable(client, admin, prod)
    workload = auth(await tokens.create("viewer", ("spaces:credentials",), environment="prod"))
    spec = await (await client.get("/api/docs/openapi.json")).json()
    documented = [path for path, operations in spec["paths"].items() if "get" in operations]
    assert len(documented) >= 9
    for template in [*documented, *UNDOCUMENTED_GETS]:
        path = template.replace("{id}", prod)
        headers = workload if path.endswith("/credentials") else admin
        got = await client.get(path, headers=headers)
        await got.read()
        head = await client.head(path, headers=headers)
        assert (path, got.status, head.status) == (path, 200, 200)
        assert await head.read() == b""
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        assert head.headers.get("ETag") == got.headers.get("ETag")
    # a HEAD of the credentials delivers nothing, so the trail records no delivery for it
    audit = await client.get("/api/audit", params={"resourceType": "credentials"}, headers=admin)
    assert len((await audit.json())["entries"]) == 2  # the two GETs
