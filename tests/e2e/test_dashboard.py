"""The dashboard at ``/`` in a real browser (docs/dashboard.md): history and live changes,
downloads, failures, the cancel button, a gateway restart, and auth with read, write and
expired links. After every disturbance the page must match the jobs in Redis, row for
row, with no duplicate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Page

from gateway.auth import apikeys
from gateway.auth.principal import Scope
from gateway.embedded import EmbeddedRedis
from gateway.worker import SyncWorker

ROWS = """() => [...document.querySelectorAll('#rows tr')].map(tr => ({
  id: tr.dataset.jobId, status: tr.dataset.status, hidden: tr.hidden,
  badge: tr.querySelector('.badge').textContent,
  percent: Number(tr.querySelector('[role=progressbar]').getAttribute('aria-valuenow')),
  details: tr.querySelector('.details').textContent,
  download: tr.querySelector('a.download')?.href ?? null,
  cancel: !tr.querySelector('button.cancel').hidden}))"""

HTTPS = "https://files.example/out.pdf?sig=1"


def rows(page: Page) -> dict[str, dict[str, Any]]:
    listed: list[dict[str, Any]] = page.evaluate(ROWS)
    ids = [row["id"] for row in listed]
    assert len(ids) == len(set(ids)), f"duplicate rows: {ids}"
    return {row["id"]: row for row in listed}


def state(page: Page) -> str:
    return str(page.get_attribute("#connection", "data-state"))


def wait_state(page: Page, *states: str, timeout: float = 15) -> None:
    # Polled from here: the page's Content-Security-Policy forbids the eval that
    # Playwright's wait_for_function would run in it.
    deadline = time.monotonic() + timeout
    while state(page) not in states:
        assert time.monotonic() < deadline, f"the page stayed {state(page)!r}, not {states}"
        time.sleep(0.05)


def wait_rows(page: Page, check: Any, timeout: float = 15) -> dict[str, dict[str, Any]]:
    """Until ``check(rows)`` holds (the page draws once per animation frame)."""
    deadline = time.monotonic() + timeout
    while True:
        current = rows(page)
        try:
            done = check(current)
        except KeyError:  # a row not drawn yet (after a reconnect, the list is read again)
            done = False
        if done:
            return current
        assert time.monotonic() < deadline, (
            f"the page never got there: {len(current)} rows, {list(current.values())[:5]}")
        time.sleep(0.1)


def in_redis(url: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every job of the tenant, from the gateway's JSON list (as Redis holds them)."""
    jobs: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{url}/v1/jobs", params=params, headers=headers, timeout=5).json()
        jobs.update({job["job_id"]: job for job in page["jobs"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


def matches(shown: dict[str, dict[str, Any]], truth: dict[str, dict[str, Any]]) -> bool:
    if set(shown) != set(truth):
        return False
    for job_id, job in truth.items():
        row = shown[job_id]
        percent = 100 if job["status"] == "completed" else int(job["progress"]["percent"])
        badge = ("cancel requested" if job["cancel_requested"] and job["status"] == "running"
                 else job["status"])
        if (row["status"], row["percent"], row["badge"]) != (job["status"], percent, badge):
            return False
    return True


def wait_true(page: Page, url: str, headers: dict[str, str] | None = None,
              timeout: float = 20) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        truth, shown = in_redis(url, headers), rows(page)
        if matches(shown, truth):
            return shown
        assert time.monotonic() < deadline, f"page {shown}\n!= Redis {truth}"
        time.sleep(0.2)


@pytest.fixture
def watched(page: Page) -> Iterator[Page]:
    """The page, with every request it makes and every error it logs recorded."""
    page.requested = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requested.append(request.url))  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    yield page


class Auth:
    """How a test's page gets in: with auth off, or (auth on) by a read-only link of
    ``gateway dashboard-url`` for the tenant acme."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.tenant = "acme" if on else "default"
        self.key: str | None = None
        self.redis_url = ""

    def bind(self, redis_url: str) -> Auth:
        """Use this Redis (with a write key of acme's in it, when auth is on)."""
        self.redis_url = redis_url
        if self.on:
            with redis.Redis.from_url(redis_url) as client:
                self.key, _ = apikeys.create(client, "acme", Scope.WRITE, "dashboard")
        return self

    def worker(self) -> SyncWorker:
        return SyncWorker.from_url(self.redis_url, tenant=self.tenant)

    def page_url(self, gateway: Any) -> str:
        return _link(self.redis_url, gateway.url) if self.on else f"{gateway.url}/"

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Authorization": f"Bearer {self.key}"} if self.key else None


@pytest.fixture(params=[False, True], ids=["auth off", "read link"])
def auth(request: pytest.FixtureRequest, redis_url: str) -> Auth:
    return Auth(request.param).bind(redis_url)


def test_history_then_live_changes_downloads_and_errors(
    gateway, auth: Auth, watched: Page
) -> None:
    page = watched
    with auth.worker() as worker:
        worker.create("done", conversion={"source_format": "docx", "target_format": "pdf",
                                          "original_filename": "report.docx"})
        worker.start("done")
        worker.complete("done", file_url=HTTPS, file_name="report.pdf", file_size_bytes=52_000)
        worker.create("broken")
        worker.start("broken")
        worker.fail("broken", "ffmpeg.invalid_input", "Invalid data found when processing input")
        worker.create("waiting")

        page.goto(auth.page_url(gateway))
        wait_state(page, "live")
        shown = wait_rows(page, lambda rows: len(rows) == 3)
        assert shown["done"]["badge"] == "completed" and shown["done"]["percent"] == 100
        assert "report.docx" in page.inner_text("tr[data-job-id=done]")
        assert "docx → pdf" in page.inner_text("tr[data-job-id=done]")
        assert shown["broken"]["badge"] == "failed"
        assert "ffmpeg.invalid_input" in shown["broken"]["details"]
        assert "Invalid data found" in shown["broken"]["details"]
        assert shown["waiting"]["badge"] == "queued"
        assert shown["waiting"]["cancel"] is not auth.on  # a read link cancels nothing
        assert page.is_visible("#mode") is auth.on
        assert not shown["done"]["cancel"] and not shown["broken"]["cancel"]

        # The download link goes through the gateway: 307 to the output's URL.
        answer = page.request.get(shown["done"]["download"], max_redirects=0)
        assert answer.status == 307 and answer.headers["location"] == HTTPS

        # A new job appears at the top; its bar advances; it completes with a link.
        worker.create("fresh")
        wait_rows(page, lambda rows: "fresh" in rows)
        assert page.evaluate("document.querySelector('#rows tr').dataset.jobId") == "fresh"
        worker.start("fresh", phase="Encoding pass 1/2")
        seen = []
        for percent in (20, 45, 80):
            worker.progress("fresh", percent)
            row = wait_rows(page, lambda rows, p=percent: rows["fresh"]["percent"] == p)["fresh"]
            seen.append(row["percent"])
        assert seen == [20, 45, 80]
        assert "80% · Encoding pass 1/2" in page.inner_text("tr[data-job-id=fresh]")
        # The time left, from the snapshot's estimate (docs/api.md, Time left).
        left = page.inner_text("tr[data-job-id=fresh] .time-left")
        assert re.fullmatch(r"about \d+ (s|min|h) left|almost done", left), left
        worker.complete("fresh", file_url=HTTPS, file_name="fresh.webm")
        row = wait_rows(page, lambda rows: rows["fresh"]["status"] == "completed")["fresh"]
        assert row["download"] and "Download fresh.webm" in row["details"]
        assert page.inner_text("tr[data-job-id=fresh] .time-left") == ""

        # Deleted: the row goes.
        worker.delete("broken")
        wait_rows(page, lambda rows: "broken" not in rows)

        # The filters show one status at a time, with counts.
        page.click("#filters button[data-status=completed]")
        shown = rows(page)
        assert [job for job, row in shown.items() if not row["hidden"]] == ["fresh", "done"]
        assert page.inner_text("[data-count=completed]") == "2"
        assert page.get_attribute("#filters button[data-status=completed]",
                                  "aria-pressed") == "true"
        page.click("#filters button[data-status='']")
        assert not any(row["hidden"] for row in rows(page).values())
    wait_true(page, gateway.url, auth.headers)
    assert page.errors == []  # type: ignore[attr-defined]
    # Everything came from the gateway itself: no CDN, nothing from outside.
    assert all(url.startswith(gateway.url) for url in page.requested)  # type: ignore[attr-defined]


def test_accessible_and_usable_at_phone_width(gateway, redis_url: str, page: Page) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("phone", conversion={"source_format": "mp4", "target_format": "webm",
                                           "original_filename": "a rather long file name "
                                                                "for a small screen.mp4"})
        worker.start("phone", phase="Encoding pass 2/2")
        worker.progress("phone", 63.4)
        page.set_viewport_size({"width": 375, "height": 740})
        page.goto(f"{gateway.url}/")
        wait_rows(page, lambda rows: rows.get("phone", {}).get("percent") == 63)
    bar = page.locator("tr[data-job-id=phone] [role=progressbar]")
    assert bar.get_attribute("aria-valuemin") == "0"
    assert bar.get_attribute("aria-valuemax") == "100"
    assert bar.get_attribute("aria-valuetext") == "63%, Encoding pass 2/2"
    assert page.locator("th[scope=col]").count() == 7
    # Nothing wider than the screen, and the cancel button is on it.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    box = page.locator("tr[data-job-id=phone] button.cancel").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 375
    assert page.get_attribute("#connection", "role") == "status"


def _run_until_canceled(redis_url: str, job_id: str, stop: threading.Event) -> None:
    """A worker that reports every 0.2 s and cancels once it sees cancel_requested."""
    with SyncWorker.from_url(redis_url) as worker:
        worker.start(job_id, phase="Rendering")
        percent = 0.0
        while not stop.wait(0.2):
            percent = min(percent + 1, 99)
            if worker.progress(job_id, percent)["cancel_requested"]:
                worker.cancel(job_id)
                return


def test_the_cancel_button_cancels_and_the_worker_reacts(
    gateway, redis_url: str, page: Page
) -> None:
    stop = threading.Event()
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("busy")
        worker.create("idle")
    runner = threading.Thread(target=_run_until_canceled, args=(redis_url, "busy", stop))
    runner.start()
    try:
        page.goto(f"{gateway.url}/")
        wait_rows(page, lambda rows: rows.get("busy", {}).get("percent", 0) >= 2)
        page.click("tr[data-job-id=busy] button.cancel")
        # The request is shown at once (the answer's snapshot), then the worker's cancel.
        wait_rows(page, lambda rows: rows["busy"]["badge"] in ("cancel requested", "canceled"))
        wait_rows(page, lambda rows: rows["busy"]["status"] == "canceled")
        page.click("tr[data-job-id=idle] button.cancel")  # queued: canceled at once
        shown = wait_rows(page, lambda rows: rows["idle"]["status"] == "canceled")
        assert not shown["busy"]["cancel"] and not shown["idle"]["cancel"]
        runner.join(10)
        assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(10)
    assert "canceled" in page.inner_text("#message")
    wait_true(page, gateway.url)


def _changes_meanwhile(worker: SyncWorker) -> None:
    worker.complete("r1", file_url=HTTPS)
    worker.fail("r2", "pdf.encrypted", "The PDF is encrypted")
    worker.progress("r3", 70, phase="Packaging")
    worker.request_cancel("q1")  # queued: canceled
    worker.delete("ended")
    worker.create("new")
    worker.start("new")


def _before(worker: SyncWorker) -> None:
    for job_id in ("r1", "r2", "r3", "q1", "ended"):
        worker.create(job_id)
    for job_id in ("r1", "r2", "r3"):
        worker.start(job_id)
        worker.progress(job_id, 30)
    worker.cancel("ended")


def test_a_gateway_restart_shows_reconnecting_then_the_truth(
    start_gateway, auth: Auth, page: Page
) -> None:
    gateway = start_gateway(GATEWAY_RETRY_MS="300", GATEWAY_HEARTBEAT_SECONDS="1")
    with auth.worker() as worker:
        _before(worker)
        page.goto(auth.page_url(gateway))
        wait_state(page, "live")
        wait_true(page, gateway.url, auth.headers)
        assert gateway.terminate() == 0
        wait_state(page, "reconnecting", "offline")
        _changes_meanwhile(worker)
        time.sleep(1)  # a few failed reconnects
        assert state(page) in ("reconnecting", "offline")
        again = start_gateway(port=gateway.port, GATEWAY_RETRY_MS="300")
        wait_state(page, "live", timeout=20)
        shown = wait_true(page, again.url, auth.headers)
        assert "ended" not in shown and shown["new"]["status"] == "running"
        worker.progress("r3", 90)  # and it is live again
        wait_rows(page, lambda rows: rows["r3"]["percent"] == 90)


def test_a_gateway_that_answers_503_meanwhile_is_retried_from_the_last_event(
    start_gateway, auth: Auth, page: Page
) -> None:
    """Restarted while Redis is down, the gateway answers 503: EventSource gives up for
    good on an HTTP error, and the page opens a new one at its last event id."""
    with EmbeddedRedis(persistent=True) as server:
        auth.bind(server.url)
        gateway = start_gateway(server.url, GATEWAY_RETRY_MS="300")
        with auth.worker() as worker:
            _before(worker)
            page.goto(auth.page_url(gateway))
            wait_true(page, gateway.url, auth.headers)
            assert gateway.terminate() == 0
            server.stop()
            again = start_gateway(server.url, port=gateway.port, ready=False,
                                  GATEWAY_RETRY_MS="300")
            assert httpx.get(f"{again.url}/v1/jobs", headers=auth.headers,
                             timeout=10).status_code == 503
            wait_state(page, "reconnecting", "offline")
            time.sleep(2)  # the page's own retries meet 503 too
            server.start()
            _changes_meanwhile(worker)
            wait_state(page, "live", timeout=30)
            wait_true(page, again.url, auth.headers)


# -- auth --------------------------------------------------------------------------------

def _link(redis_url: str, base: str, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "dashboard-url", "--tenant", "acme", "--base", base,
         *options],
        env={**os.environ, "REDIS_URL": redis_url}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def acme(start_gateway, redis_url: str, r: redis.Redis) -> Iterator[Any]:
    key, _ = apikeys.create(r, "acme", Scope.WRITE, "backend")
    gateway = start_gateway(GATEWAY_RETRY_MS="300")
    with SyncWorker.from_url(redis_url, tenant="acme") as worker, \
            SyncWorker.from_url(redis_url) as other:
        worker.create("a-queued")
        worker.create("a-running")
        worker.start("a-running")
        other.create("not-acme")
        gateway.key = key
        yield gateway


def test_a_read_link_shows_the_tenant_read_only(acme, redis_url: str, page: Page) -> None:
    link = _link(redis_url, acme.url)
    assert "#token=" in link
    page.goto(link)
    wait_state(page, "live")
    shown = wait_true(page, acme.url, {"Authorization": f"Bearer {acme.key}"})
    assert set(shown) == {"a-queued", "a-running"}  # not the other tenant's
    assert not any(row["cancel"] for row in shown.values())
    assert page.is_visible("#mode")
    assert page.inner_text("#tenant") == "acme"
    assert page.evaluate("location.hash") == ""  # out of the address bar
    page.reload()  # the tab keeps it
    wait_state(page, "live")
    wait_rows(page, lambda rows: set(rows) == {"a-queued", "a-running"})


def test_a_write_link_cancels_and_keeps_its_write_token_out_of_urls(
    acme, redis_url: str, watched: Page
) -> None:
    page = watched
    link = _link(redis_url, acme.url, "--write")
    write_token = link.split("&write_token=")[1]
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.headers.get("authorization", ""))
            if request.method == "POST" else None)
    page.goto(link)
    shown = wait_rows(page, lambda rows: len(rows) == 2)
    assert shown["a-queued"]["cancel"] and not page.is_visible("#mode")
    page.click("tr[data-job-id=a-queued] button.cancel")
    wait_rows(page, lambda rows: rows["a-queued"]["status"] == "canceled")
    page.click("tr[data-job-id=a-running] button.cancel")
    wait_rows(page, lambda rows: rows["a-running"]["badge"] == "cancel requested")
    assert sent == [f"Bearer {write_token}"] * 2
    urls = page.requested[1:]  # type: ignore[attr-defined]  # (the first is the link)
    assert urls and not any(write_token in url for url in urls)
    assert any("access_token=" in url for url in urls)  # the read token, for the stream


def test_a_link_that_expires_says_so_and_what_to_do(acme, redis_url: str, page: Page) -> None:
    page.goto(_link(redis_url, acme.url, "--ttl", "6s"))  # 5 to 6 s (exp is whole seconds)
    wait_state(page, "live")
    wait_rows(page, lambda rows: len(rows) == 2)
    wait_state(page, "expired", timeout=12)
    assert page.inner_text("#notice-title") == "Your link expired"
    assert page.inner_text("#notice-command") == "gateway dashboard-url --tenant acme"
    assert len(rows(page)) == 2  # the jobs as they were, still shown
    # A link opened after it expired: the same, at once.
    page.goto("about:blank")
    page.goto(_link(redis_url, acme.url, "--ttl", "1s"))
    time.sleep(1.5)
    page.reload()
    wait_state(page, "expired")


def test_without_a_token_the_page_says_how_to_get_one(acme, page: Page) -> None:
    page.goto(f"{acme.url}/")
    wait_state(page, "stopped")
    assert page.inner_text("#notice-title") == "This gateway needs a credential"
    assert "gateway dashboard-url --tenant" in page.inner_text("#notice-command")


def test_a_revoked_key_ends_its_links(acme, redis_url: str, r: redis.Redis, page: Page) -> None:
    page.goto(_link(redis_url, acme.url))
    wait_state(page, "live")
    for record in apikeys.records(r):
        apikeys.revoke(r, record.key_id)
    wait_state(page, "stopped", timeout=15)
    assert page.inner_text("#notice-title") == "The gateway refused this link"


# -- the files ---------------------------------------------------------------------------

def test_the_page_and_its_files_come_from_the_package_open_and_locked_down(
    gateway, r: redis.Redis
) -> None:
    page = httpx.get(f"{gateway.url}/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    again = httpx.get(f"{gateway.url}/", headers={"If-None-Match": page.headers["etag"]},
                      timeout=5)
    assert again.status_code == 304 and again.content == b""
    assert httpx.head(f"{gateway.url}/", timeout=5).status_code == 200
    refused = httpx.post(f"{gateway.url}/", timeout=5)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, OPTIONS"
    for name, kind in [("main.js", "text/javascript"), ("table.js", "text/javascript"),
                       ("dashboard.css", "text/css")]:
        asset = httpx.get(f"{gateway.url}/ui/{name}", timeout=5)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    for path in ["/ui/nope.js", "/ui/index.html", "/ui/..%2F..%2Fdashboard.py", "/ui/"]:
        missing = httpx.get(f"{gateway.url}{path}", timeout=5)
        assert missing.status_code == 404, path
        assert missing.json()["error"] == "request.not_found"
    # With auth on, the page stays open: its data needs the credential, not its files.
    apikeys.create(r, "acme", Scope.READ)
    deadline = time.monotonic() + 10
    while httpx.get(f"{gateway.url}/v1/jobs", timeout=5).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{gateway.url}/", timeout=5).status_code == 200
    assert httpx.get(f"{gateway.url}/ui/main.js", timeout=5).status_code == 200


def test_500_jobs_and_200_updates_a_second_end_true(gateway, redis_url: str, page: Page) -> None:
    """The load the page is built for (its timings are in bench/, not here): every row
    ends equal to Redis."""
    with SyncWorker.from_url(redis_url) as worker:
        for n in range(500):
            worker.create(f"load-{n:03d}")
        running = [f"load-{n:03d}" for n in range(0, 500, 2)]  # half of them run
        for job_id in running:
            worker.start(job_id)
        page.goto(f"{gateway.url}/")
        wait_rows(page, lambda rows: len(rows) == 500, timeout=20)
        # Each row is built once and then changed in place: marked now, kept to the end.
        page.evaluate("document.querySelectorAll('#rows tr').forEach(tr => tr.kept = true)")
        began = time.monotonic()
        for n in range(1000):  # 200 a second for 5 s, spread over the running jobs
            job_id = running[n % len(running)]
            worker.progress(job_id, min(99, 1 + n // len(running) * 20 + n % 7))
            pause = began + (n + 1) / 200 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for job_id in running[:50]:
            worker.complete(job_id, file_url=HTTPS)
    shown = wait_true(page, gateway.url, timeout=30)
    assert len(shown) == 500
    assert page.evaluate("[...document.querySelectorAll('#rows tr')].every(tr => tr.kept)")


# -- what makes the page read the list again ----------------------------------------------

def _list_reads(page: Page) -> int:
    return sum("/v1/jobs?limit=200" in url for url in page.requested)  # type: ignore[attr-defined]


def test_a_stream_that_opens_with_a_reset_reads_the_list_once(
    start_gateway, redis_url: str, watched: Page
) -> None:
    page = watched
    gateway = start_gateway(GATEWAY_STREAM_OPEN_MAX_JOBS="3")
    with SyncWorker.from_url(redis_url) as worker:
        for n in range(6):
            worker.create(f"busy-{n}")
            worker.start(f"busy-{n}")
        page.goto(f"{gateway.url}/")
        wait_true(page, gateway.url)
        worker.progress("busy-0", 50)  # and it is live
        wait_rows(page, lambda rows: rows["busy-0"]["percent"] == 50)
    assert _list_reads(page) == 1


def test_a_redis_that_lost_its_data_leaves_no_stale_row(start_gateway, watched: Page) -> None:
    page = watched
    with EmbeddedRedis() as server:  # keeps nothing: a restart comes back empty
        gateway = start_gateway(server.url, GATEWAY_RETRY_MS="300")
        with SyncWorker.from_url(server.url) as worker:
            _before(worker)
            page.goto(f"{gateway.url}/")
            wait_true(page, gateway.url)
        server.stop()
        server.start()
        # Nothing tells the page but the stream's end: the reconnect finds no position to
        # resume from and opens with the jobs not ended, here none.
        assert wait_true(page, gateway.url, timeout=30) == {}
        with SyncWorker.from_url(server.url) as worker:
            worker.create("after")
            shown = wait_true(page, gateway.url)
    assert set(shown) == {"after"}


def test_older_jobs_load_on_demand(gateway, redis_url: str, page: Page) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        for n in range(650):  # ended: the stream opens with none of them, the list has all
            worker.create(f"old-{n:03d}")
            worker.request_cancel(f"old-{n:03d}")
    page.goto(f"{gateway.url}/")
    wait_rows(page, lambda rows: len(rows) == 600)  # three pages of 200: 500 or more
    assert page.is_visible("#older")
    page.click("#older")
    wait_rows(page, lambda rows: len(rows) == 650)
    assert not page.is_visible("#older")
    wait_true(page, gateway.url)


def test_offline_then_online_comes_back_live(gateway, redis_url: str, page: Page) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("net")
        worker.start("net")
        page.goto(f"{gateway.url}/")
        wait_state(page, "live")
        page.context.set_offline(True)
        wait_state(page, "offline")
        worker.progress("net", 40)
        page.context.set_offline(False)
        wait_state(page, "live", timeout=20)
        wait_rows(page, lambda rows: rows["net"]["percent"] == 40)


def test_a_failed_read_of_the_list_is_tried_again_at_once_when_back_online(
    gateway, redis_url: str, page: Page
) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.request_cancel(worker.create("ended")["job_id"])  # only the list shows it
    failing = [0]

    def refuse(route: Any) -> None:
        failing[0] += 1
        route.abort()

    listing = re.compile(r"/v1/jobs\?limit=200")
    page.route(listing, refuse)
    page.goto(f"{gateway.url}/")
    deadline = time.monotonic() + 15
    while failing[0] < 3:  # 0 s, 1 s, 3 s: the next try would be 4 s later
        assert time.monotonic() < deadline
        page.wait_for_timeout(50)  # (route handlers run only while Playwright is called)
    page.unroute(listing)
    page.context.set_offline(True)
    page.context.set_offline(False)
    wait_rows(page, lambda rows: "ended" in rows, timeout=2.5)
    wait_state(page, "live")
