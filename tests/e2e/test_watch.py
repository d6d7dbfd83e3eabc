"""``gateway watch`` as a subprocess against a live gateway.

Each test waits for the watch's stream to be open (the gateway's own gauge), never for a
fixed time, and checks exactly what it shows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx

from gateway.embedded import free_port
from gateway.worker import SyncWorker


def _as_at_a_terminal() -> None:
    # Ctrl-C reaches it, even when the tests run in the background of a shell (which
    # starts them with SIGINT ignored, and an ignored signal stays ignored across exec).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _watch(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway", "watch", "--url", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_at_a_terminal)


def _until_streaming(url: str, kind: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        if f'gateway_open_streams{{kind="{kind}"}} 1.0' in text:
            return
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the watch never opened its stream"
        time.sleep(0.05)


def test_watch_shows_bars_with_phases_and_exits_0_when_all_complete(
    gateway, redis_url: str
) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("a")
        worker.create("b")
        process = _watch(gateway.url, "a", "b")
        _until_streaming(gateway.url, "jobs", process)
        for job_id in ("a", "b"):
            worker.start(job_id, phase="Rendering")
            worker.progress(job_id, 50, phase="Writing")
            worker.complete(job_id, file_url="https://files.example/out", file_name=f"{job_id}.pdf")
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "✓ a completed: a.pdf" in out and "✓ b completed: b.pdf" in out
    # The bars as they were left: each job's last phase, full, and its status.
    for job_id in ("a", "b"):
        assert re.search(rf"{job_id} · Writing .*100% completed", out), out


def test_watch_exits_1_when_one_fails_and_prints_json(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("c")
        worker.create("d")
        process = _watch(gateway.url, "c", "d", "--json")
        _until_streaming(gateway.url, "jobs", process)
        assert process.stdout is not None
        lines = [json.loads(process.stdout.readline()) for _ in range(2)]  # the opening
        # Each change once the one before was shown: changes that come together may be
        # shown as the newest alone, which is not what this test is about.
        for change in (lambda: worker.start("c"),
                       lambda: worker.complete("c", file_url="https://files.example/out",
                                               file_name="c.pdf"),
                       lambda: worker.fail("d", "encoder.crashed", "exit 1")):
            change()
            lines.append(json.loads(process.stdout.readline()))
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1, err
    assert out == ""
    assert [(s["job_id"], s["status"], s["version"]) for s in lines] == [
        ("c", "queued", 1), ("d", "queued", 1), ("c", "running", 2), ("c", "completed", 3),
        ("d", "failed", 2)]
    assert lines[-1]["error"] == {"code": "encoder.crashed", "message": "exit 1"}


def test_watch_of_an_unknown_job_exits_2(gateway) -> None:
    process = _watch(gateway.url, "nobody")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "no job nobody" in err


def test_watch_of_a_gateway_that_cannot_be_reached_exits_2() -> None:
    process = _watch(f"http://127.0.0.1:{free_port()}", "any")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "cannot reach the gateway" in err


def test_watch_resumes_across_a_gateway_restart(start_gateway, redis_url: str) -> None:
    """A job that ends while the gateway is down shows up only on a resume: a stream of
    the whole tenant opened afresh shows just the jobs not ended."""
    first = start_gateway()
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("r")
        process = _watch(first.url, "--all", "--json")
        _until_streaming(first.url, "tenant", process)
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["status"] == "queued"
        assert first.terminate() == 0
        worker.start("r")
        worker.complete("r", file_url="https://files.example/r", file_name="r.pdf")
        start_gateway(port=first.port)
        assert json.loads(process.stdout.readline())["status"] == "completed"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def test_an_interrupted_watch_exits_130(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("slow")
        process = _watch(gateway.url, "slow")
        _until_streaming(gateway.url, "jobs", process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err


def test_watch_sends_gateway_api_key(start_gateway, redis_url: str) -> None:
    import redis

    from gateway.auth import apikeys
    from gateway.auth.principal import Scope

    with redis.Redis.from_url(redis_url) as r:
        key, _ = apikeys.create(r, "acme", Scope.READ)
    gateway = start_gateway()
    with SyncWorker.from_url(redis_url, tenant="acme") as worker:
        worker.create("w")
        worker.start("w")
        worker.complete("w", file_url="https://files.example/w", file_name="w.pdf")
    refused = subprocess.run([sys.executable, "-m", "gateway", "watch", "--url", gateway.url,
                              "w"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "auth.invalid_credentials" in refused.stderr
    watched = subprocess.run([sys.executable, "-m", "gateway", "watch", "--url", gateway.url,
                              "w"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "GATEWAY_API_KEY": key})
    assert watched.returncode == 0, watched.stderr
    assert "✓ w completed: w.pdf" in watched.stdout
    assert key not in watched.stdout + watched.stderr


def test_watch_shows_the_time_left(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("eta")
        process = _watch(gateway.url, "eta")
        _until_streaming(gateway.url, "jobs", process)
        worker.start("eta")
        time.sleep(0.5)
        snapshot = worker.progress("eta", 10)  # 20 %/s: some 4 s to go
        assert snapshot["progress"]["eta_at"] is not None
        deadline = time.monotonic() + 10
        while httpx.get(f"{gateway.url}/v1/jobs/eta").json()["version"] < 3:
            assert time.monotonic() < deadline
        time.sleep(0.3)  # the watch's next redraw
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert re.search(r"eta .*10% running about [1-5] s left", out), out


def test_the_time_left_reads_as_a_person_says_it() -> None:
    from gateway.client.watch import time_left

    now = 1_800_000_000.0
    at = "2027-01-15T08:00:00Z"  # 1_800_000_000 + 0 s
    assert time_left(None, now) == ""
    assert time_left(at, now) == "almost done"
    assert time_left(at, now - 40) == "about 40 s left"
    assert time_left(at, now - 600) == "about 10 min left"
    assert time_left(at, now - 3 * 3600) == "about 3 h left"
    assert time_left("not a time", now) == ""
