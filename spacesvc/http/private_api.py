"""Every use of a library's private API, fenced in one module.

aiohttp and aiohttp-apispec offer no public way to do what is done here; each name below is one
the library may change in any release. ``tests/http/test_private_api.py`` checks every one of
them against the installed versions, so an upgrade that changes one fails there, by name, and
nowhere else need be read. The rest of the service uses only what this module gives a public
name:

- aiohttp's connection handler (``RequestHandler``): whether it waits for a request
  (``_waiter``), holds a parsed head not yet handled (``_messages``), is handling a request
  (``_request_in_progress``); its event loop (``_loop``) and the server it belongs to
  (``_manager``): ``ConnectionHandler``.
- aiohttp's ``web.Server`` makes each connection's handler from ``_loop`` and ``_kwargs``:
  ``HandlerServer``; ``web.AppRunner`` builds its server in ``_make_server``, whose class is
  changed after (the server's state is the same; only the handler it makes differs):
  ``ServerRunner``.
- a request's route match before routing, or for a request that was never routed (the public
  ``match_info`` asserts there is one): ``match_info``.
- aiohttp-apispec's hooks for each route's operation, ``_update_paths``, and for the page of the
  API docs, ``_add_swagger_web_page``: ``OperationHookSpec``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp_apispec import AiohttpApiSpec


class ConnectionHandler(RequestHandler):
    """aiohttp's connection handler, its private state read under public names."""

    __slots__ = ()

    @property
    def waiting_for_request(self) -> bool:
        """Between requests: the handler waits for the next request's head."""
        return self._waiter is not None and not self._waiter.done()

    @property
    def head_received(self) -> bool:
        """A request's whole head has been parsed and waits to be handled."""
        return bool(self._messages)

    @property
    def request_in_progress(self) -> bool:
        return self._request_in_progress

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def web_server(self) -> web.Server | None:
        """The server that made this handler (None once the connection is lost)."""
        return self._manager


class HandlerServer(web.Server):
    """A ``web.Server`` whose connections are handled by ``handler_class``."""

    handler_class: ClassVar[type[RequestHandler]] = RequestHandler

    def __call__(self) -> RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class ServerRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a ``server_class``, then set up by ``server_made``."""

    server_class: ClassVar[type[HandlerServer]] = HandlerServer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = self.server_class
        assert isinstance(server, HandlerServer)
        self.server_made(server)
        return server

    def server_made(self, server: HandlerServer) -> None:
        """Set up the server just made (the default: nothing)."""


def match_info(request: web.BaseRequest) -> web.UrlMappingMatchInfo | None:
    """The request's route match; None before routing, or for a request that was never routed."""
    return getattr(request, "_match_info", None)


class OperationHookSpec(AiohttpApiSpec):
    """``AiohttpApiSpec`` calling ``add_operation`` for each route's operation (its documentation
    data, the method, the URL path) instead of adding it itself, and ``add_docs_page`` to serve the
    docs page (its static assets' path and the page's path) instead of its bundled Swagger UI."""

    def _update_paths(self, data: dict[str, Any], method: str, url_path: str) -> None:
        self.add_operation(data, method, url_path)

    def add_operation(self, data: dict[str, Any], method: str, url_path: str) -> None:
        super()._update_paths(data, method, url_path)

    def _add_swagger_web_page(self, app: web.Application, static_path: str, view_path: str) -> None:
        self.add_docs_page(app, static_path, view_path)

    def add_docs_page(self, app: web.Application, static_path: str, view_path: str) -> None:
        super()._add_swagger_web_page(app, static_path, view_path)
