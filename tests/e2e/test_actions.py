"""Cancel, delete, download and long-poll (docs/api.md)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis

from gateway.worker import SyncWorker


@pytest.fixture
def worker(redis_url: str):
    with SyncWorker.from_url(redis_url) as w:
        yield w


def test_cancel(gateway, worker: SyncWorker) -> None:
    worker.create("q")
    response = httpx.post(f"{gateway.url}/v1/jobs/q/cancel")
    assert response.status_code == 202
    assert response.headers["location"] == "/v1/jobs/q"
    assert response.json()["status"] == "canceled"  # queued: at once
    worker.create("r")
    worker.start("r")
    response = httpx.post(f"{gateway.url}/v1/jobs/r/cancel")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    worker.cancel("r")  # the worker saw the request and stopped
    again = httpx.post(f"{gateway.url}/v1/jobs/r/cancel")
    assert again.status_code == 409 and again.json()["error"] == "jobs.not_cancellable"
    assert httpx.post(f"{gateway.url}/v1/jobs/none/cancel").status_code == 404
    assert httpx.post(f"{gateway.url}/v1/jobs/bad!/cancel").status_code == 400


def test_delete(gateway, worker: SyncWorker) -> None:
    worker.create("d")
    response = httpx.delete(f"{gateway.url}/v1/jobs/d")
    assert response.status_code == 409 and response.json()["error"] == "jobs.not_deletable"
    worker.fail("d", "x")
    assert httpx.delete(f"{gateway.url}/v1/jobs/d").status_code == 204
    assert httpx.get(f"{gateway.url}/v1/jobs/d").status_code == 404
    assert httpx.delete(f"{gateway.url}/v1/jobs/d").status_code == 404


def test_a_deleted_job_ends_its_streams_with_deleted(gateway, worker: SyncWorker) -> None:
    worker.create("gone")
    worker.cancel("gone")
    with httpx.Client(timeout=10) as client, client.stream(
        "GET", f"{gateway.url}/v1/jobs?job_id=gone", headers={"Accept": "text/event-stream"}
    ) as response:
        lines = response.iter_lines()
        while "event: snapshot" not in next(lines):
            pass
        assert httpx.delete(f"{gateway.url}/v1/jobs/gone").status_code == 204
        while next(lines) != "event: deleted":
            pass
        assert '"job_id":"gone"' in next(lines)


def test_download(redis_url: str, start_gateway) -> None:
    gateway = start_gateway()
    with SyncWorker.from_url(redis_url, output_ttl_seconds=2) as worker:
        worker.create("dl")
        url = f"{gateway.url}/v1/jobs/dl/download"
        response = httpx.get(url)
        assert response.status_code == 409 and response.json()["error"] == "jobs.not_ready"
        worker.start("dl")
        worker.complete("dl", file_url="https://files.example/dl.pdf?sig=1", file_name="dl.pdf")
        response = httpx.get(url)
        assert response.status_code == 307
        assert response.headers["location"] == "https://files.example/dl.pdf?sig=1"
        time.sleep(2.2)
        response = httpx.get(url)
        assert response.status_code == 410 and response.json()["error"] == "jobs.expired"
    assert httpx.get(f"{gateway.url}/v1/jobs/nope/download").status_code == 404


def test_long_poll_returns_when_the_version_moves(gateway, worker: SyncWorker) -> None:
    worker.create("lp")
    etag = httpx.get(f"{gateway.url}/v1/jobs/lp").headers["etag"]
    threading.Timer(0.5, lambda: worker.start("lp")).start()
    # Held for up to 60 s, it answers with the change: version 2 can only come after the
    # start, half a second in (at its timeout it would be 304, a minute later).
    response = httpx.get(f"{gateway.url}/v1/jobs/lp", timeout=90,
                         headers={"If-None-Match": etag, "Prefer": "wait=60"})
    assert response.status_code == 200 and response.json()["version"] == 2
    assert response.headers["preference-applied"] == "wait=60"


def test_long_poll_times_out_with_304(gateway, worker: SyncWorker) -> None:
    worker.create("lq")
    etag = httpx.get(f"{gateway.url}/v1/jobs/lq").headers["etag"]
    started = time.monotonic()
    response = httpx.get(f"{gateway.url}/v1/jobs/lq", timeout=20,
                         headers={"If-None-Match": etag, "Prefer": "wait=1"})
    assert response.status_code == 304
    assert time.monotonic() - started >= 0.9
    # Without a matching ETag there is nothing to wait for; 600 is capped at 60.
    response = httpx.get(f"{gateway.url}/v1/jobs/lq", timeout=20,
                         headers={"If-None-Match": '"0"', "Prefer": "wait=600"})
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=60"


@pytest.mark.parametrize("allow_http", [False, True])
def test_download_redirects_only_to_absolute_https_urls(
    start_gateway, redis_url: str, r: redis.Redis, allow_http: bool
) -> None:
    """Issue 10, item 15: checked when a worker completes the job (the update script), and
    again here, for records written before or by hand."""
    env = {"GATEWAY_ALLOW_HTTP_DOWNLOADS": "true"} if allow_http else {}
    gateway = start_gateway(**env)
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("dl")
        worker.start("dl")
        worker.complete("dl", file_url="https://files.example/dl.pdf")
    key = "gw:{default}:job:dl"
    original = r.hget(key, "snapshot")
    for url, allowed in [
        ("https://files.example/dl.pdf", True), ("HTTPS://files.example/x", True),
        ("http://files.example/dl.pdf", allow_http), ("javascript:alert(1)", False),
        ("data:text/html,hi", False), ("file:///etc/passwd", False),
        ("//evil.example/x", False), ("/relative", False), ("https:///nohost", False),
    ]:
        r.hset(key, "snapshot", original.replace(b"https://files.example/dl.pdf",
                                                 url.encode()))
        response = httpx.get(f"{gateway.url}/v1/jobs/dl/download")
        if allowed:
            assert response.status_code == 307 and response.headers["location"] == url, url
        else:
            assert response.status_code == 409, url
            assert response.json()["error"] == "jobs.not_ready"
            assert "location" not in response.headers


def test_a_number_past_2_53_is_refused_not_rounded(gateway) -> None:
    # The update script reads numbers as doubles: 2^53 + 1 would be stored as 2^53.
    body = b'{"job_id": "big", "conversion": {"source_size_bytes": 9007199254740993}}'
    response = httpx.post(f"{gateway.url}/v1/jobs", content=body, timeout=10,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": "request.invalid_parameter", "detail":
                               "9007199254740993 is past 2^53: JSON numbers are exact only "
                               "up to there"}
    exact = body.replace(b"9007199254740993", b"9007199254740992")
    created = httpx.post(f"{gateway.url}/v1/jobs", content=exact, timeout=10)
    assert created.json()["conversion"]["source_size_bytes"] == 2**53
