"""The route table: every URL the gateway answers, its methods and its endpoint.

One table of Starlette Route objects; the front (gateway.web.front) matches requests
against it with ``Route.matches``. Each route's endpoint is a Resource: the handler per
method, whether it needs a credential (every /v1 URL), and the one place that answers
405 with ``Allow`` and 403 to a read credential on a method that changes things.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Send

from gateway.web import actions, dashboard, job, jobs, problems, reference, service, tokens
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.types import Handler, Reply

_READS = ("GET", "HEAD")


class Resource:
    """The handlers of one URL, by method. ``HEAD`` is served wherever ``GET`` is, and
    ``OPTIONS`` everywhere (by the front: CORS preflights come without credentials)."""

    def __init__(self, *, protected: bool = True, described: bool = True,
                 **handlers: Handler) -> None:
        self.protected = protected
        self.described = described  # in /openapi.json (all but /docs' static files)
        self._handlers = {method.upper(): handler for method, handler in handlers.items()}
        if "GET" in self._handlers:
            self._handlers.setdefault("HEAD", self._handlers["GET"])
        order = sorted(self._handlers, key=lambda m: _READS.index(m) if m in _READS else 2)
        self.allow = ", ".join([*order, "OPTIONS"])

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def __call__(self, request: Request, context: Context, send: Send) -> Awaitable[Reply]:
        method = request.method
        handler = self._handlers.get(method)
        if handler is None:
            raise problems.method_not_allowed(method, self.allow)
        if method not in _READS:
            context.require_write()
        return handler(request, context, send)


def routes(services: Services) -> list[Route]:
    """The route table; the two reads that open streams come first (the hot path)."""
    one, many = job.JobEndpoint(services), jobs.JobsEndpoint(services)
    act = actions.Actions(services)
    own = service.Service(services)
    minted = tokens.Tokens(services)
    described = reference.Reference()
    page = dashboard.Dashboard()
    table = [
        Route("/v1/jobs/{job_id}", Resource(get=one.get, delete=act.delete)),
        Route("/v1/jobs", Resource(get=many.get, post=many.create)),
        Route("/v1/jobs/{job_id}/cancel", Resource(post=act.cancel)),
        Route("/v1/jobs/{job_id}/download", Resource(get=act.download)),
        Route("/v1/tokens", Resource(post=minted.create)),
        # Open, whatever the keys (docs/operations.md, Metrics: keep /metrics internal).
        Route("/healthz", Resource(get=own.healthz, protected=False)),
        Route("/readyz", Resource(get=own.readyz, protected=False)),
        Route("/metrics", Resource(get=own.metrics, protected=False)),
        Route("/openapi.json", Resource(get=described.openapi, protected=False)),
        Route("/docs", Resource(get=described.page, protected=False)),
        Route("/docs/{name}", Resource(get=described.asset, protected=False, described=False)),
        # The dashboard's files need no credential: its data comes through /v1 with one.
        Route("/", Resource(get=page.page, protected=False)),
        Route("/ui/{name}", Resource(get=page.asset, protected=False, described=False)),
    ]
    described.describe(table)
    return table
