"""``gateway watch`` as a subprocess against a live gateway (issue 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from gateway.worker import SyncWorker


def _watch(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway", "watch", "--url", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_watch_exits_0_when_all_complete(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("a")
        worker.create("b")
        process = _watch(gateway.url, "a", "b")
        time.sleep(1.0)
        for job_id in ("a", "b"):
            worker.start(job_id, phase="Rendering")
            worker.progress(job_id, 50)
            worker.complete(job_id, file_url="https://files.example/out", file_name=f"{job_id}.pdf")
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "a completed: a.pdf" in out and "b completed: b.pdf" in out


def test_watch_exits_1_when_one_fails_and_prints_json(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("c")
        worker.create("d")
        process = _watch(gateway.url, "c", "d", "--json")
        time.sleep(1.0)
        worker.start("c")
        worker.complete("c", file_url="https://files.example/out", file_name="c.pdf")
        worker.fail("d", "encoder.crashed", "exit 1")
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(s["job_id"], s["status"]) for s in lines} >= {("c", "completed"), ("d", "failed")}
    assert lines[-1]["status"] in ("completed", "failed")


def test_watch_of_an_unknown_job_exits_2(gateway) -> None:
    process = _watch(gateway.url, "nobody")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "nobody" in err
