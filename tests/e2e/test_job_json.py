"""``GET /v1/jobs/{id}`` as JSON, ``POST /v1/jobs``, errors and health (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis

from gateway.embedded import EmbeddedRedis
from gateway.worker import SyncWorker


@pytest.fixture
def worker(redis_url: str):
    with SyncWorker.from_url(redis_url) as w:
        yield w


def test_snapshot_with_etag_vary_and_retry_after(gateway, worker: SyncWorker) -> None:
    created = worker.create("j1", conversion={"source_format": "docx", "target_format": "pdf"})
    response = httpx.get(f"{gateway.url}/v1/jobs/j1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == created
    # The position of the job's last change: it changes whenever the body does.
    assert re.fullmatch(r'"[a-z0-9]{6,16}-1"', response.headers["etag"])
    assert response.headers["vary"] == "Accept"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["retry-after"] == "2"


def test_if_none_match_gives_304_until_the_version_moves(gateway, worker: SyncWorker) -> None:
    worker.create("j2")
    url = f"{gateway.url}/v1/jobs/j2"
    etag = httpx.get(url).headers["etag"]
    for tag in (etag, f"W/{etag}", f'"7", {etag}', "*"):
        response = httpx.get(url, headers={"If-None-Match": tag})
        assert response.status_code == 304, tag
        assert response.content == b""
        assert response.headers["etag"] == etag
    worker.start("j2")
    response = httpx.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.json()["version"] == 2


def test_the_etag_changes_whenever_the_body_does(gateway, redis_url: str) -> None:
    """Issue 10, item 13: the bare version came back after a delete and create of the
    same id, and stayed when the output expired: 304 for a different document."""
    url = f"{gateway.url}/v1/jobs/e"
    with SyncWorker.from_url(redis_url, output_ttl_seconds=1) as worker:
        worker.create("e")
        first = httpx.get(url)
        worker.cancel("e")
        worker.delete("e")
        worker.create("e")  # version 1 again: another document
        again = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 200 and again.headers["etag"] != first.headers["etag"]
        worker.start("e")
        worker.complete("e", file_url="https://files.example/e.pdf")
        done = httpx.get(url)
        assert done.json()["output"]["file_url"] == "https://files.example/e.pdf"
        time.sleep(1.2)  # the output expires: the body reads output: null now
        expired = httpx.get(url, headers={"If-None-Match": done.headers["etag"]})
        assert expired.status_code == 200 and expired.json()["output"] is None
        assert expired.headers["etag"] != done.headers["etag"]
        assert httpx.get(url, headers={"If-None-Match": expired.headers["etag"]}
                         ).status_code == 304


def test_terminal_snapshot_has_no_retry_after(gateway, worker: SyncWorker) -> None:
    worker.create("j3")
    worker.cancel("j3")
    response = httpx.get(f"{gateway.url}/v1/jobs/j3")
    assert response.json()["status"] == "canceled"
    assert "retry-after" not in response.headers


def test_output_reads_null_once_expired(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url, output_ttl_seconds=1) as worker:
        worker.create("j4")
        worker.start("j4")
        done = worker.complete("j4", file_url="https://files.example/x", file_name="x.pdf")
    assert httpx.get(f"{gateway.url}/v1/jobs/j4").json()["output"] == done["output"]
    time.sleep(2.1)
    snapshot = httpx.get(f"{gateway.url}/v1/jobs/j4").json()
    assert snapshot["output"] is None and snapshot["status"] == "completed"


def test_unknown_job_is_404(gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "jobs.not_found"
    assert response.json()["detail"]


def _redis_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_ping"))


@pytest.mark.parametrize("bad", ["a.b", "x" * 129, "%2A", "a%20b", "job:1", "%7Bt%7D"])
@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_invalid_job_id_is_400_before_any_redis_command(
    gateway, r: redis.Redis, bad: str, accept: str
) -> None:
    before = _redis_calls(r)
    response = httpx.get(f"{gateway.url}/v1/jobs/{bad}", headers={"Accept": accept})
    assert response.status_code == 400
    assert response.json()["error"] == "request.invalid_job_id"
    assert _redis_calls(r) == before


NEGOTIATION = [
    (None, "json"),
    ("*/*", "json"),
    ("application/json", "json"),
    ("application/*", "json"),
    ("text/event-stream", "stream"),
    ("text/*", "stream"),
    ("application/event-stream", "stream"),  # one vendor API's spelling
    ("text/event-stream, application/json", "json"),  # a tie goes to JSON
    ("application/json;q=0.5, text/event-stream", "stream"),
    ("application/json, text/event-stream;q=0.9", "json"),
    ("text/event-stream;q=0.4, */*;q=0.5", "json"),
    ("text/event-stream;q=0.6, */*;q=0.5", "stream"),
    ("text/html, */*;q=0.1", "json"),
    ("image/png", 406),
    ("text/html", 406),
    ("application/json;q=0", 406),
    ("application/xml, text/plain", 406),
]


@pytest.mark.parametrize(("accept", "expected"), NEGOTIATION)
def test_negotiation(gateway, worker: SyncWorker, accept: str | None, expected: object) -> None:
    worker.create("neg")
    worker.cancel("neg")  # terminal, so a stream ends by itself after its snapshot
    headers = {} if accept is None else {"Accept": accept}
    with httpx.Client(timeout=5) as client:
        if accept is None:
            client.headers.pop("accept")
        response = client.get(f"{gateway.url}/v1/jobs/neg", headers=headers)
    assert response.headers["vary"] == "Accept"
    if expected == 406:
        assert response.status_code == 406
        assert response.json()["error"] == "request.not_acceptable"
    elif expected == "json":
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["job_id"] == "neg"
    else:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert "event: snapshot" in response.text


def test_create_job(gateway) -> None:
    body = {"job_id": "made-1", "conversion": {"source_format": "mp4", "target_format": "webm"}}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=body)
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/jobs/made-1"
    snapshot = response.json()
    assert snapshot["status"] == "queued" and snapshot["conversion"] == body["conversion"]
    fetched = httpx.get(f"{gateway.url}/v1/jobs/made-1")
    assert fetched.json() == snapshot and fetched.headers["etag"] == response.headers["etag"]
    again = httpx.post(f"{gateway.url}/v1/jobs", json=body)
    assert again.status_code == 409 and again.json()["error"] == "jobs.already_exists"


def test_create_job_without_id_makes_one(gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/jobs")
    assert response.status_code == 201
    job_id = response.json()["job_id"]
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", job_id)
    assert response.headers["location"] == f"/v1/jobs/{job_id}"


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "request.invalid_parameter"),
    (b"[1]", "request.invalid_parameter"),
    (b'{"job_id": "ok", "colour": "red"}', "request.invalid_parameter"),
    (b'{"job_id": "no way"}', "request.invalid_job_id"),
    (b'{"conversion": {"format": "x"}}', "request.invalid_parameter"),
    (b'{"conversion": "pdf"}', "request.invalid_parameter"),
    (b"\n\n", "request.invalid_parameter"),  # whitespace is not JSON; no body at all is {}
])
def test_create_job_rejects_bad_bodies(gateway, body: bytes, code: str) -> None:
    response = httpx.post(f"{gateway.url}/v1/jobs", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == code


@pytest.mark.parametrize(("body", "code"), [
    (b'{"conversion": ' + b"{\"a\": " * 1000 + b"1" + b"}" * 1000 + b"}",
     "request.invalid_parameter"),
    (b"[" * 20_000 + b"]" * 20_000, "request.invalid_parameter"),  # under the body limit
    (b'{"conversion": {"source_size_bytes": 1e999}}', "request.invalid_parameter"),
    (b'{"conversion": {"source_size_bytes": NaN}}', "request.invalid_parameter"),
    (b'{"conversion": {"original_filename": "' + b"n" * 2000 + b'"}}',
     "request.invalid_parameter"),
    (b'{"conversion": {"original_filename": "caf\xe9.doc"}}', "request.invalid_parameter"),
])
def test_hostile_bodies_are_400_and_bump_nothing(gateway, r: redis.Redis, body: bytes,
                                                 code: str) -> None:
    seq = r.get("gw:{default}:seq")
    response = httpx.post(f"{gateway.url}/v1/jobs", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert r.get("gw:{default}:seq") == seq


def test_more_than_100_job_ids_is_400_even_when_they_repeat(gateway) -> None:
    query = "&".join(["job_id=same"] * 101)
    response = httpx.get(f"{gateway.url}/v1/jobs?{query}", timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "request.invalid_parameter",
                               "detail": "at most 100 job_id parameters on one request "
                                         "(101 given)"}
    assert httpx.get(f"{gateway.url}/v1/jobs?{query.partition('&')[2]}",
                     timeout=10).status_code == 200


def test_a_body_over_the_limit_is_413(gateway, r: redis.Redis) -> None:
    body = b'{"conversion": {"original_filename": "' + b"n" * 2_000_000 + b'"}}'
    response = httpx.post(f"{gateway.url}/v1/jobs", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "request.too_large"
    assert r.get("gw:{default}:seq") is None


def test_health_and_readiness(gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200


def test_unknown_route_and_method_get_json_errors(gateway) -> None:
    response = httpx.get(f"{gateway.url}/v2/nothing")
    assert response.status_code == 404 and response.json()["error"] == "request.not_found"
    response = httpx.put(f"{gateway.url}/v1/jobs/x")
    assert response.status_code == 405
    assert response.json()["error"] == "request.method_not_allowed"


def test_redis_down_gives_503_quickly_then_recovers(start_gateway) -> None:
    with EmbeddedRedis() as server:
        with SyncWorker.from_url(server.url) as worker:
            worker.create("up")
        gw = start_gateway(server.url, GATEWAY_REDIS_TIMEOUT_SECONDS="1",
                           GATEWAY_SUBSCRIBE_TIMEOUT_SECONDS="1")
        assert httpx.get(f"{gw.url}/v1/jobs/up").status_code == 200
        server.kill()
        for path, accept in (("/v1/jobs/up", "application/json"),
                             ("/v1/jobs/up", "text/event-stream"), ("/readyz", "*/*")):
            # A 503, not a hang: the gateway bounds its wait by GATEWAY_REDIS_TIMEOUT_SECONDS
            # (a hang would be the client's own timeout, an exception here).
            response = httpx.get(f"{gw.url}{path}", headers={"Accept": accept}, timeout=30)
            assert response.status_code == 503, path
            assert response.json()["error"] == "backend.unavailable"
            assert int(response.headers["retry-after"]) > 0
        server.start()
        deadline = time.monotonic() + 15
        while httpx.get(f"{gw.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.1)
        assert "Traceback" not in gw.output()


def test_requests_beyond_the_redis_pool_wait_for_a_connection(
    start_gateway, r: redis.Redis
) -> None:
    """More concurrent writes than pooled connections queue for one; none is a 503, and
    Redis never sees more of the pool's connections than GATEWAY_REDIS_CONNECTIONS (reads
    share one pipelined connection of their own, pub/sub another)."""
    gateway = start_gateway(GATEWAY_REDIS_CONNECTIONS="3")
    seen: list[int] = []
    stop = threading.Event()

    def count_pool_connections() -> None:
        # redis-py names its library on every connection; the gateway's own connections
        # (reads, pub/sub) do not use redis-py. The test's client is left out by its id.
        own = str(r.client_id())
        while not stop.is_set():
            seen.append(sum(1 for c in r.client_list()
                            if c.get("lib-name") == "redis-py" and c["id"] != own))
            time.sleep(0.005)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/jobs", json={"job_id": f"pool{n}"}) for n in range(200)))
        return [response.status_code for response in responses]

    watcher = threading.Thread(target=count_pool_connections)
    watcher.start()
    try:
        codes = asyncio.run(burst())
    finally:
        stop.set()
        watcher.join()
    assert codes == [201] * 200
    assert 1 <= max(seen) <= 3, max(seen)

def test_a_redis_database_other_than_0_is_refused(redis_server: EmbeddedRedis) -> None:
    """Pub/sub ignores the database: the gateway, its worker library and `gateway job`
    stop with a message instead of mixing the streams of two databases."""
    url = f"{redis_server.url.rstrip('/').rsplit('/', 1)[0]}/03"
    for argv in (["serve"], ["job", "create", "db3"]):
        done = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "REDIS_URL": url})
        assert done.returncode == 2, done.stderr
        assert "REDIS_URL" in done.stderr and "database 3" in done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match="database 3"):
        SyncWorker.from_url(url)
    assert redis.Redis.from_url(url).dbsize() == 0  # nothing was written anywhere


def test_a_stored_record_that_is_not_utf8_is_still_served(gateway, worker, r: redis.Redis) -> None:
    """Written before the script refused it, or by hand: never a 500, never invalid JSON."""
    worker.create("latin")
    worker.start("latin")
    worker.complete("latin", file_url="https://files.example/x")
    key = "gw:{default}:job:latin"
    snapshot = r.hget(key, "snapshot").replace(b'"output":{', b'"output":{"note":"caf\xe9",')
    r.hset(key, mapping={"snapshot": snapshot, "output_expires": "1"})  # output expired too
    one = httpx.get(f"{gateway.url}/v1/jobs/latin")
    assert one.status_code == 200 and one.json()["output"] is None
    assert one.json()["job_id"] == "latin"
    listed = httpx.get(f"{gateway.url}/v1/jobs")
    assert listed.status_code == 200 and listed.json()["jobs"][0]["job_id"] == "latin"
    r.hset(key, mapping={"output_expires": ""})
    page = httpx.get(f"{gateway.url}/v1/jobs?job_id=latin")
    assert json.loads(page.content.decode("utf-8"))["jobs"][0]["output"]["note"] == "caf\ufffd"
    with httpx.stream("GET", f"{gateway.url}/v1/jobs/latin", timeout=10,
                      headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        text = stream.read().decode("utf-8")
    assert "caf\ufffd" in text


def test_http_edges(gateway, worker: SyncWorker) -> None:
    """Issue 10, item 16."""
    worker.create("edge")
    worker.create("edge2")
    worker.start("edge2")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        # A trailing slash: no redirect built from the Host header, just 404.
        for path in ("/v1/jobs/", "/healthz/", "/v1/jobs/edge/"):
            response = client.get(path, headers={"Host": "evil.example"})
            assert response.status_code == 404, path
            assert response.json()["error"] == "request.not_found"
            assert "location" not in response.headers
        # An encoded slash is part of a segment, not a separator: no cancel of "edge".
        response = client.post("/v1/jobs/edge%2Fcancel")
        assert response.status_code == 405
        assert client.get("/v1/jobs/edge").json()["status"] == "queued"
        response = client.get("/v1/jobs/edge%2Fdownload")
        assert response.status_code == 400
        assert response.json()["error"] == "request.invalid_job_id"
        # A q-value that is not a number accepts nothing.
        for accept in ("text/event-stream;q=nan", "text/event-stream;q=inf"):
            response = client.get("/v1/jobs/edge", headers={"Accept": accept})
            assert response.status_code == 406, accept
        # ?status= repeated: every one of them.
        page = client.get("/v1/jobs?status=queued&status=running").json()
        assert sorted(job["job_id"] for job in page["jobs"]) == ["edge", "edge2"]
        assert client.get("/v1/jobs?status=running&status=bogus").status_code == 400


def test_a_redis_that_refuses_a_write_is_503_not_500(gateway, r: redis.Redis) -> None:
    r.config_set("maxmemory", "1")  # every write is refused: OOM
    try:
        response = httpx.post(f"{gateway.url}/v1/jobs", json={"job_id": "oom"})
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "backend.unavailable"
        assert "Traceback" not in gateway.output()
    finally:
        r.config_set("maxmemory", "0")
