"""A real browser's EventSource against the gateway: Debian's chromium, driven by Playwright.

The browser is the client the event stream is for (docs/api.md, Event streams): named events,
`Last-Event-ID` on reconnect, and 204 to stop it for good.
"""

from __future__ import annotations

import time

import httpx
import redis
from playwright.sync_api import Page

from gateway.auth import apikeys
from gateway.auth.principal import Scope
from gateway.embedded import free_port
from gateway.worker import SyncWorker


def wait_for(page: Page, condition: str, timeout: float = 15) -> None:
    page.wait_for_function(condition, timeout=timeout * 1000)


RECORDER = """
(path) => {
  window.log = [];
  const source = new EventSource(path);
  window.source = source;
  for (const name of ["snapshot", "progress", "status", "deleted", "unknown"]) {
    source.addEventListener(name, (e) => {
      const data = JSON.parse(e.data);
      window.log.push({event: name, id: e.lastEventId, job: data.job_id,
                       status: data.status, version: data.version});
    });
  }
  source.onerror = () => window.log.push({event: "error", state: source.readyState});
}
"""


def test_event_source_follows_a_job_and_stops_at_the_end(
    start_gateway, redis_url: str, page: Page
) -> None:
    gateway = start_gateway(GATEWAY_RETRY_MS="300")
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("web")
        page.goto(f"{gateway.url}/healthz")  # same origin as the stream
        page.evaluate(RECORDER, "/v1/jobs/web")
        wait_for(page, "window.log.some(e => e.event === 'snapshot')")
        # Each change once the page saw the one before (changes that come together may
        # reach it as the newest alone).
        worker.start("web", phase="Rendering")
        wait_for(page, "window.log.some(e => e.version === 2)")
        worker.progress("web", 50)
        wait_for(page, "window.log.some(e => e.version === 3)")
        worker.complete("web", file_url="https://files.example/web.pdf")
        # The stream ends after the terminal event; EventSource reconnects with its last
        # id, gets 204, and closes for good (readyState 2).
        wait_for(page, "window.source.readyState === 2")
        time.sleep(1.0)  # it must not come back
        log = page.evaluate("window.log")
    events = [e for e in log if e["event"] != "error"]
    assert [(e["event"], e["version"]) for e in events] == [
        ("snapshot", 1), ("status", 2), ("progress", 3), ("status", 4)]
    assert events[-1]["status"] == "completed"
    assert all(e["id"] for e in events)
    assert [e["state"] for e in log if e["event"] == "error"][-1] == 2
    access = gateway.output()
    assert access.count('"path": "/v1/jobs/web"') == 2  # the stream, then the 204
    assert '"status": 204' in access


def test_event_source_on_many_jobs_resumes_after_a_gateway_restart(
    start_gateway, redis_url: str, page: Page
) -> None:
    first = start_gateway(GATEWAY_RETRY_MS="300")
    with SyncWorker.from_url(redis_url) as worker:
        for job_id in ("b1", "b2"):
            worker.create(job_id)
        page.goto(f"{first.url}/healthz")
        page.evaluate(RECORDER, "/v1/jobs?job_id=b1&job_id=b2&job_id=b3")
        wait_for(page, "window.log.filter(e => e.event === 'snapshot').length === 2")
        assert first.terminate() == 0
        worker.start("b1")  # while no gateway runs
        worker.cancel("b2")
        start_gateway(port=first.port, GATEWAY_RETRY_MS="300")
        wait_for(page, "window.log.filter(e => e.job === 'b2' && e.status === 'canceled')"
                       ".length === 1")
        worker.complete("b1", file_url="https://files.example/out")
        wait_for(page, "window.log.some(e => e.job === 'b1' && e.status === 'completed')")
        log = page.evaluate("window.log")
    events = [e for e in log if e["event"] != "error"]
    assert events[0]["event"] == "unknown"  # b3, reported once
    seen = {}
    for event in events[1:]:
        assert event["version"] > seen.get(event["job"], 0)  # only ever up
        seen[event["job"]] = event["version"]
    assert seen == {"b1": 3, "b2": 2}
    resumed = [e for e in events if e["event"] == "snapshot"][2:]
    assert {e["job"] for e in resumed} == {"b1", "b2"}  # exactly the jobs that changed


def _follow_to_the_end(page: Page, worker: SyncWorker, job_id: str) -> list[dict[str, object]]:
    wait_for(page, "window.log.some(e => e.event === 'snapshot')")
    worker.start(job_id)
    wait_for(page, "window.log.some(e => e.version === 2)")
    worker.complete(job_id, file_url="https://files.example/out.pdf")
    wait_for(page, "window.source.readyState === 2")
    log: list[dict[str, object]] = page.evaluate("window.log")
    return [e for e in log if e["event"] != "error"]


def test_a_page_on_another_origin_streams_with_a_token_in_the_url(
    start_gateway, redis_url: str, r: redis.Redis, page: Page
) -> None:
    """docs/api.md, Auth: a page's server mints a short-lived token; the page, on another origin,
    streams with it in ``?access_token=``; no key is in any URL or log."""
    port = free_port()
    page_origin = f"http://localhost:{port}"  # another origin than 127.0.0.1:port
    key, _ = apikeys.create(r, "acme", Scope.WRITE)
    gateway = start_gateway(port=port, GATEWAY_RETRY_MS="300",
                            GATEWAY_CORS_ORIGINS=page_origin)
    minted = httpx.post(f"{gateway.url}/v1/tokens", headers={"Authorization": f"Bearer {key}"},
                        json={"scope": "read", "job_ids": ["cors"], "ttl_seconds": 300})
    token = minted.json()["token"]
    with SyncWorker.from_url(redis_url, tenant="acme") as worker:
        worker.create("cors")
        page.goto(f"{page_origin}/healthz")
        page.evaluate(RECORDER, f"{gateway.url}/v1/jobs/cors?access_token={token}")
        events = _follow_to_the_end(page, worker, "cors")
    assert [(e["event"], e["version"]) for e in events] == [
        ("snapshot", 1), ("status", 2), ("status", 3)]
    assert gateway.terminate() == 0
    output = gateway.output()
    assert token not in output and key not in output
    assert output.count('"path": "/v1/jobs/cors"') == 2  # the stream, then the 204


def test_a_page_streams_with_a_token_in_a_cookie(
    start_gateway, redis_url: str, r: redis.Redis, page: Page
) -> None:
    key, _ = apikeys.create(r, "acme", Scope.WRITE)
    gateway = start_gateway(GATEWAY_RETRY_MS="300")
    token = httpx.post(f"{gateway.url}/v1/tokens", headers={"Authorization": f"Bearer {key}"},
                       json={}).json()["token"]
    page.context.add_cookies([{"name": "gateway_token", "value": token, "url": gateway.url}])
    with SyncWorker.from_url(redis_url, tenant="acme") as worker:
        worker.create("crumb")
        page.goto(f"{gateway.url}/healthz")
        page.evaluate(RECORDER, "/v1/jobs/crumb")
        events = _follow_to_the_end(page, worker, "crumb")
    assert [e["event"] for e in events] == ["snapshot", "status", "status"]
    page.context.clear_cookies()
    assert gateway.terminate() == 0
    assert token not in gateway.output()


def test_the_api_reference_page_renders_every_operation_from_the_gateway_alone(
    gateway, page: Page
) -> None:
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.goto(f"{gateway.url}/docs")
    operations = httpx.get(f"{gateway.url}/openapi.json", timeout=5).json()["paths"]
    count = sum(len(item) for item in operations.values())
    wait_for(page, f"document.querySelectorAll('.opblock').length === {count}")
    assert page.locator(".info .title").inner_text().startswith("Job status gateway")
    assert errors == []
    assert requested and all(url.startswith(gateway.url) for url in requested), requested
