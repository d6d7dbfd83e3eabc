"""What the endpoints share: the settings, and the backend and hub the lifespan opens."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from starlette.requests import Request

from gateway import problems
from gateway.backend.base import Backend
from gateway.contract.keys import DEFAULT_TENANT
from gateway.fanout.hub import Hub
from gateway.observability.metrics import Metrics
from gateway.settings import Settings

# Until API keys exist every job belongs to one tenant; the tenant is in every key and
# channel name all the same (issue 2, item 8).
TENANT = DEFAULT_TENANT


class AppState:
    backend: Backend
    hub: Hub
    metrics: Metrics

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class RawEndpoint:
    """A raw ASGI endpoint (no request/response wrapper, so that streams stay lean) whose
    ApiErrors and Redis outages become error responses.

    ``handle`` answers a request itself, or returns the stream that will: a coroutine
    awaited once ``handle`` has returned, so that the Request it was built from (its
    headers, query, scope copies) is not held for the stream's whole life.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await problems.answering_errors(scope, receive, send,
                                        lambda: self._run(scope, receive, send))

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        stream = await self.handle(Request(scope, receive), send)
        if stream is not None:
            await stream

    async def handle(self, request: Request, send: Any) -> Coroutine[Any, Any, None] | None:
        raise NotImplementedError
