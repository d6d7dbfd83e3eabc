"""The ASGI entry: every request's one path through the gateway.

For each request: a context (gateway.web.context), the route that matches in the one
route table (gateway.web.routes), the guard's checks (gateway.web.guard: CORS, OPTIONS,
the body limit, the credential), its handler, and the answer: a whole response, or a
stream that runs in this same call until the client leaves. An ApiError, a Redis outage
or an unexpected error before a response started becomes the contract's error body; the
access line is written at the end, whatever happened.

Starlette's own stack (error middleware, exception middleware, router, route) is not on
this path: an open stream keeps every layer it passed through suspended for its whole
life, and every event goes back out through each layer's ``send`` wrapper. That is
memory per idle stream and CPU per event that buys nothing once the response started
(docs/architecture.md has the figures). Starlette gives the route
objects, the matching, requests and responses, and the lifespan protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router
from starlette.types import Receive, Scope, Send

from gateway.errors import BackendUnavailable
from gateway.web import problems
from gateway.web.context import Context
from gateway.web.guard import Guard
from gateway.web.routes import Resource

log = logging.getLogger("gateway.front")

AccessLog = Callable[[Context, Scope], None]


def _keeping_encoded_slashes(raw_path: bytes) -> str:
    return "/".join(unquote(part).replace("/", "%2F")
                    for part in raw_path.decode("latin-1").split("/"))


class Front:
    def __init__(
        self,
        routes: list[Route],
        *,
        guard: Guard,
        lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
        access_log: AccessLog,
    ) -> None:
        self.routes = routes
        self._guard = guard
        self._router = Router(routes=routes, lifespan=lifespan)  # for its lifespan protocol
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._router.lifespan(scope, receive, send)
            elif scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        context = Context(scope)
        guard = self._guard
        guard.greet(context)
        try:
            raw = scope.get("raw_path")
            # An encoded slash (%2F) is part of a path segment, not a separator: routes are
            # matched on a path that keeps it, so /v1/jobs/x%2Fcancel is no cancel of x.
            matched = scope if raw is None or (b"%2f" not in raw and b"%2F" not in raw) else {
                **scope, "path": _keeping_encoded_slashes(raw)}
            for route in self.routes:
                match, child = route.matches(matched)
                if match is not Match.NONE:
                    break
            else:
                raise problems.no_route()
            scope.update(child)
            resource: Resource = route.endpoint  # type: ignore[assignment]
            reply: Response | Any
            if scope["method"] == "OPTIONS":
                reply = guard.options(context, scope, resource.allow)
            else:
                if not guard.admit(context, scope, resource.protected):
                    await guard.catch_up()  # a key made a moment ago works at once
                    guard.admit(context, scope, resource.protected, caught_up=True)
                reply = await resource(Request(scope, receive), context, send)
            if isinstance(reply, Response):
                await context.respond(reply, scope, receive, send)
            else:
                await reply  # a stream: until the client leaves
        except problems.ApiError as error:
            await self._answer(context, error, scope, receive, send)
        except BackendUnavailable:
            await self._answer(context, problems.backend_unavailable(), scope, receive, send)
        except Exception:
            if context.status:
                raise  # the response started: the server logs it and closes the connection
            log.exception("unexpected error before a response started")
            await self._answer(context, problems.internal(), scope, receive, send)
        finally:
            self._access_log(context, scope)

    @staticmethod
    async def _answer(context: Context, error: problems.ApiError, scope: Scope,
                      receive: Receive, send: Send) -> None:
        # Endpoints raise only before their response starts (streams touch Redis before
        # they open); a response that started cannot be replaced.
        if context.status:
            raise error
        await context.respond(error.response(), scope, receive, send)
