"""CORS (docs/api.md, Auth): a listed origin gets its headers on JSON, errors and streams, and
its preflights answered; any other origin gets no CORS header at all."""

from __future__ import annotations

import httpx
import pytest
import redis

from gateway.auth import apikeys
from gateway.auth.principal import Scope

ALLOWED = "https://dash.example"
REFUSED = "https://evil.example"
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials",
                "access-control-allow-methods", "access-control-allow-headers",
                "access-control-expose-headers", "access-control-max-age")


@pytest.fixture
def key(r: redis.Redis) -> str:
    key, _ = apikeys.create(r, "acme", Scope.READ)
    return key


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in CORS_HEADERS if name in response.headers}


@pytest.mark.parametrize("with_credentials", [True, False])
def test_an_allowed_origin_gets_cors_headers_on_json_errors_and_streams(
    start_gateway, key: str, with_credentials: bool
) -> None:
    gateway = start_gateway(GATEWAY_CORS_ORIGINS=f"{ALLOWED}, http://localhost:3000")
    auth = {"Authorization": f"Bearer {key}"} if with_credentials else {}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.post("/v1/jobs", json={"job_id": "c"}, headers={"Authorization": f"Bearer {key}"})
        json_answer = client.get("/v1/jobs", headers={"Origin": ALLOWED, **auth})
        with client.stream("GET", "/v1/jobs", headers={
                "Origin": ALLOWED, "Accept": "text/event-stream", **auth}) as stream:
            stream_status, stream_headers = stream.status_code, cors_headers(stream)
    assert json_answer.status_code == (200 if with_credentials else 401)
    assert stream_status == json_answer.status_code
    for headers in (cors_headers(json_answer), stream_headers):
        assert headers["access-control-allow-origin"] == ALLOWED
        assert headers["access-control-allow-credentials"] == "true"
        assert "ETag" in headers["access-control-expose-headers"]
    assert "Origin" in json_answer.headers.get_list("vary")


def test_another_origin_gets_no_cors_header_at_all(start_gateway, key: str) -> None:
    gateway = start_gateway(GATEWAY_CORS_ORIGINS=ALLOWED)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for headers in ({"Origin": REFUSED}, {"Origin": REFUSED, "Authorization": f"Bearer {key}"},
                        {"Origin": "null"}, {}):
            answer = client.get("/v1/jobs", headers=headers)
            assert cors_headers(answer) == {}, headers
            with client.stream("GET", "/v1/jobs", headers={
                    **headers, "Accept": "text/event-stream"}) as stream:
                assert cors_headers(stream) == {}
        preflight = client.options("/v1/jobs/x", headers={
            "Origin": REFUSED, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 204 and cors_headers(preflight) == {}


def test_a_preflight_from_an_allowed_origin_is_answered(start_gateway) -> None:
    gateway = start_gateway(GATEWAY_CORS_ORIGINS=ALLOWED)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        preflight = client.options("/v1/jobs/x", headers={
            "Origin": ALLOWED, "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "Authorization, Last-Event-ID, If-None-Match, "
                                              "Prefer, Content-Type"})
        assert preflight.status_code == 204
        headers = cors_headers(preflight)
        assert headers["access-control-allow-origin"] == ALLOWED
        assert headers["access-control-allow-credentials"] == "true"
        assert "DELETE" in headers["access-control-allow-methods"]
        for name in ("Authorization", "Last-Event-ID", "If-None-Match", "Prefer",
                     "Content-Type"):
            assert name in headers["access-control-allow-headers"]
        # A method this URL does not take, or a header outside the list: no preflight.
        for asked in ({"Access-Control-Request-Method": "PUT"},
                      {"Access-Control-Request-Method": "GET",
                       "Access-Control-Request-Headers": "x-admin"}):
            refused = client.options("/v1/jobs/x", headers={"Origin": ALLOWED, **asked})
            assert "access-control-allow-methods" not in refused.headers
        assert client.options("/v1/nowhere", headers={"Origin": ALLOWED}).status_code == 404


def test_without_cors_origins_nothing_is_added(start_gateway) -> None:
    gateway = start_gateway()
    answer = httpx.get(f"{gateway.url}/v1/jobs", headers={"Origin": ALLOWED})
    assert cors_headers(answer) == {} and "Origin" not in answer.headers.get("vary", "")
