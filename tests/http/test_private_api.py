"""The library internals ``spacesvc.http.private_api`` relies on, checked against the installed
aiohttp and aiohttp-apispec: an upgrade that renames or removes one fails here, by name."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_protocol import RequestHandler
from aiohttp_apispec import AiohttpApiSpec, docs

from spacesvc.http.openapi import OpenApi3Spec
from spacesvc.http.private_api import ConnectionHandler, HandlerServer, OperationHookSpec, ServerRunner, match_info
from spacesvc.http.server import Protocol, Runner, Server

pytestmark = pytest.mark.unit


async def ok(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def test_aiohttp_s_connection_handler_still_keeps_the_state_read_under_public_names() -> None:
    slots = {name for kind in RequestHandler.__mro__ for name in getattr(kind, "__slots__", ())}
    assert {"_waiter", "_messages", "_request_in_progress", "_loop", "_manager"} <= slots


async def test_a_new_connection_handler_waits_for_nothing_holds_no_head_and_knows_its_loop_and_server() -> None:
    server = web.Server(ok)
    handler = ConnectionHandler(server, loop=asyncio.get_running_loop())
    assert (handler.waiting_for_request, handler.head_received, handler.request_in_progress) == (False, False, False)
    assert handler.event_loop is asyncio.get_running_loop() and handler.web_server is server


async def test_a_handler_server_makes_its_handler_class_with_the_server_s_own_arguments() -> None:
    server = Server(ok, keepalive_timeout=7.5)
    handler = server()
    assert type(handler) is Protocol and handler.keepalive_timeout == 7.5 and handler.web_server is server
    assert {"_loop", "_kwargs"} <= set(vars(server))


async def test_an_app_runner_still_makes_its_server_in_make_server_and_the_runner_swaps_its_class() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    made: list[HandlerServer] = []

    class Recording(ServerRunner):
        def server_made(self, server: HandlerServer) -> None:
            made.append(server)

    for runner, server_class in ((Recording(web.Application()), HandlerServer), (Runner(web.Application()), Server)):
        await runner.setup()  # builds the server; no socket is opened before a site starts
        try:
            assert type(runner.server) is server_class
        finally:
            await runner.cleanup()
    assert len(made) == 1


async def test_the_runner_tells_its_server_whether_parser_rejections_are_counted() -> None:
    for metrics in (True, False):
        runner = Runner(web.Application(), metrics=metrics)
        await runner.setup()
        try:
            assert isinstance(runner.server, Server) and runner.server.counted is metrics
        finally:
            await runner.cleanup()


def test_a_request_s_route_match_is_read_where_aiohttp_keeps_it() -> None:
    assert "_match_info" in web.Request.ATTRS and web.Request._match_info is None  # before routing
    request = make_mocked_request("GET", "/api/environments/abc")
    assert match_info(request) is request.match_info
    assert match_info(web.BaseRequest.__new__(web.BaseRequest)) is None  # never routed


def test_aiohttp_apispec_still_adds_each_operation_through_update_paths() -> None:
    assert list(inspect.signature(AiohttpApiSpec._update_paths).parameters) == ["self", "data", "method", "url_path"]


def test_aiohttp_apispec_still_adds_its_docs_page_through_add_swagger_web_page() -> None:
    parameters = list(inspect.signature(AiohttpApiSpec._add_swagger_web_page).parameters)
    assert parameters == ["self", "app", "static_path", "view_path"]


def test_the_openapi_document_gets_one_operation_per_route_through_the_hook() -> None:
    added: list[tuple[str, str]] = []

    class Recording(OpenApi3Spec):
        def add_operation(self, data: dict[str, Any], method: str, url_path: str) -> None:
            added.append((method, url_path))
            super().add_operation(data, method, url_path)

    app = web.Application()
    app.router.add_get("/things/{id}", docs(summary="A thing", operationId="thing")(ok), allow_head=True)
    spec = Recording(title="t", version="1")
    spec.register(app, in_place=True)
    assert sorted(added) == [("get", "/things/{id}"), ("head", "/things/{id}")]
    assert list(spec.spec.to_dict()["paths"]["/things/{id}"]) == ["get"]  # HEAD: no operation of its own
    assert issubclass(OpenApi3Spec, OperationHookSpec)
