"""BRIDGEPORT's web client, as its ``ui/src/lib/api.ts`` calls the API: every request sends
``Content-Type: application/json`` and ``Authorization: Bearer <token>`` (the token its login page
keeps in localStorage, here a spacesvc token); a body only when there is one; every answer is
parsed as JSON; a non-2xx answer throws with the body's ``message`` (or ``error``); a 401 logs the
user out. The functions below are the ones its Storage page and its environments use, with the
same names, paths and bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp


class LoggedOut(Exception):
    """api.ts sends the browser to /login and throws 'Unauthorized'."""


@dataclass
class ApiRequestError(Exception):
    status: int
    message: str
    code: str | None


class BridgeportClient:
    def __init__(self, origin: str, token: str) -> None:
        self.origin = origin
        self.token = token
        self.requests: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        data = json.dumps(body) if body else None  # `body ? JSON.stringify(body) : undefined`
        self.requests.append((method, path))
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.origin}/api{path}", headers=headers, data=data) as response,
        ):
            if response.status == 401:
                raise LoggedOut()
            parsed = json.loads(await response.read())  # `await response.json()`, whatever the status
            if not 200 <= response.status < 300:
                raise ApiRequestError(response.status, parsed.get("message") or parsed.get("error"), parsed.get("code"))
            return parsed

    # -- ui/src/lib/api.ts, "Global Spaces Configuration" ------------------------------------------
    async def getGlobalSpacesConfig(self) -> Any:
        return await self.request("GET", "/settings/spaces")

    async def updateGlobalSpacesConfig(self, data: dict[str, Any]) -> Any:
        return await self.request("PUT", "/settings/spaces", data)

    async def deleteGlobalSpacesConfig(self) -> Any:
        return await self.request("DELETE", "/settings/spaces")

    async def testGlobalSpacesConfig(self) -> Any:
        return await self.request("POST", "/settings/spaces/test")

    async def listGlobalSpacesBuckets(self) -> Any:
        return await self.request("GET", "/settings/spaces/buckets")

    async def getSpacesEnvironments(self) -> Any:
        return await self.request("GET", "/settings/spaces/environments")

    async def setSpacesEnvironmentEnabled(self, environment_id: str, enabled: bool) -> Any:
        return await self.request("PUT", f"/settings/spaces/environments/{environment_id}", {"enabled": enabled})

    async def listSpacesBuckets(self, environment_id: str) -> Any:
        return await self.request("GET", f"/environments/{environment_id}/spaces/buckets")

    async def testSpacesConnection(self, environment_id: str) -> Any:
        return await self.request("POST", f"/environments/{environment_id}/spaces/test")
