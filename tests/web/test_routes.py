"""The route table and the Resource's method dispatch."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.routing import Match

from gateway.auth.principal import Principal, Scope
from gateway.settings import Settings
from gateway.web.context import Context
from gateway.web.problems import ApiError
from gateway.web.routes import Resource, routes
from gateway.web.services import Services

pytestmark = pytest.mark.anyio


def scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "query_string": b"", "headers": []}


def table() -> list[object]:
    return routes(Services(Settings(redis_url="redis://x"), None))  # type: ignore[arg-type]


@pytest.mark.parametrize("path,expected", [
    ("/v1/jobs/abc", "/v1/jobs/{job_id}"),
    ("/v1/jobs", "/v1/jobs"),
    ("/v1/jobs/abc/cancel", "/v1/jobs/{job_id}/cancel"),
    ("/v1/jobs/abc/download", "/v1/jobs/{job_id}/download"),
    ("/healthz", "/healthz"), ("/readyz", "/readyz"), ("/metrics", "/metrics"),
    ("/", "/"), ("/ui/main.js", "/ui/{name}"),
    ("/v1/jobs/", None), ("/v1/jobs/a/b", None), ("/v2/jobs", None), ("/index.html", None),
])
def test_each_path_has_one_route(path: str, expected: str | None) -> None:
    matched = [route.path for route in table()  # type: ignore[attr-defined]
               if route.matches(scope("GET", path))[0] is not Match.NONE]
    assert matched == ([expected] if expected else [])


async def test_a_resource_dispatches_by_method_and_answers_405_with_allow() -> None:
    async def get(request: Request, context: object, send: object) -> str:
        return "got"

    async def delete(request: Request, context: object, send: object) -> str:
        return "deleted"

    resource = Resource(get=get, delete=delete)  # type: ignore[arg-type]
    assert resource.allow == "GET, HEAD, DELETE, OPTIONS"
    writer = Context(scope("GET", "/"))
    writer.authenticated(Principal("acme", Scope.WRITE, "k1", "key"))
    for method, answer in (("GET", "got"), ("HEAD", "got"), ("DELETE", "deleted")):
        request = Request(scope(method, "/"))
        assert await resource(request, writer, None) == answer  # type: ignore[arg-type]
    with pytest.raises(ApiError) as refused:
        await resource(Request(scope("PUT", "/")), writer, None)  # type: ignore[arg-type]
    assert refused.value.status == 405 and refused.value.headers == {
        "Allow": "GET, HEAD, DELETE, OPTIONS"}


async def test_a_read_credential_may_read_and_gets_403_for_a_change() -> None:
    async def handler(request: Request, context: object, send: object) -> str:
        return "done"

    resource = Resource(get=handler, delete=handler)  # type: ignore[arg-type]
    reader = Context(scope("GET", "/"))
    reader.authenticated(Principal("acme", Scope.READ, "k1", "key"))
    assert await resource(Request(scope("GET", "/")), reader, None) == "done"  # type: ignore[arg-type]
    with pytest.raises(ApiError) as refused:
        await resource(Request(scope("DELETE", "/")), reader, None)  # type: ignore[arg-type]
    assert refused.value.status == 403 and refused.value.code == "auth.insufficient_scope"
