"""Where a process is in its life, as its routes see it: serving, or draining before it stops.

``spacesvc.serving`` starts the drain on SIGTERM (docs/guarantees.md): from then on ``/readyz``
answers 503 so load balancers stop sending, and every response closes its connection, so a
keep-alive client (or proxy) opens its next one elsewhere instead of finding this one closed
under it.
"""

from __future__ import annotations

from aiohttp import web

from spacesvc.live import LIVE


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False

    def drain(self) -> None:
        self.draining = True


LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")


def close_connection_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    """Called by the pipeline's edge with every answer before it is sent
    (``spacesvc.http.pipeline``): while draining, the server closes the connection after it and
    says so (``Connection: close``, which aiohttp writes for a response that closes). A hook in
    the pipeline rather than ``on_response_prepare``: that signal costs every request a coroutine."""
    if request.app[LIFECYCLE].draining:
        response.force_close()


async def answer_held_watches(app: web.Application) -> None:
    """on_shutdown (the listener has stopped accepting): held watches are answered now."""
    live = app.get(LIVE)
    if live is not None:
        live.stop_watches()


def setup_lifecycle(app: web.Application) -> None:
    app[LIFECYCLE] = Lifecycle()
    app.on_shutdown.append(answer_held_watches)
