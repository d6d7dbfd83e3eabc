"""Time left (docs/api.md): the rate and the time of 100 % that the update script
estimates from the reports, on synthetic jobs whose rate the test sets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.worker import SyncWorker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def worker(redis_url: str) -> Iterator[SyncWorker]:
    with SyncWorker.from_url(redis_url) as w:
        yield w


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _run(worker: SyncWorker, job_id: str, steps: list[tuple[float, float]]) -> list[dict]:
    """Reports each (percent, seconds after the one before); the snapshots' progress and
    when each report was made."""
    seen = []
    for percent, pause in steps:
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            time.sleep(0.005)
        progress = worker.progress(job_id, percent)["progress"]
        seen.append({**progress, "reported": time.time()})
    return seen


def test_a_steady_rate_gives_a_time_left_within_ten_percent(worker: SyncWorker) -> None:
    worker.create("steady")
    worker.start("steady")
    # 5 % a second: 1 % every 0.2 s, for ten reports.
    seen = _run(worker, "steady", [(p, 0.2) for p in range(1, 11)])
    last = seen[-1]
    assert last["rate"] == pytest.approx(5.0, rel=0.1)
    left = _at(last["eta_at"]) - last["reported"]
    assert left == pytest.approx(90 / 5.0, rel=0.1)  # 90 % to go at 5 %/s: 18 s


def test_a_rate_that_changes_moves_the_estimate_to_it(worker: SyncWorker) -> None:
    worker.create("slows")
    worker.start("slows")
    fast = _run(worker, "slows", [(p, 0.1) for p in range(1, 16)])  # 10 %/s
    assert fast[-1]["rate"] == pytest.approx(10.0, rel=0.15)
    slow = _run(worker, "slows", [(p, 0.5) for p in range(16, 22)])  # then 2 %/s
    rates = [step["rate"] for step in slow]
    assert rates == sorted(rates, reverse=True)  # it falls at every report
    assert 2.0 < rates[-1] < 7.5  # most of the way within 3 s (RATE_TAU: 5 s)
    # And the time left grew with it, past what the fast rate promised.
    assert _at(slow[-1]["eta_at"]) > _at(fast[-1]["eta_at"]) + 2


def test_no_estimate_before_a_rising_percent_nor_after_the_end(worker: SyncWorker) -> None:
    worker.create("e")
    started = worker.start("e", phase="Loading")
    assert (started["progress"]["eta_at"], started["progress"]["rate"]) == (None, None)
    time.sleep(0.05)
    first = worker.progress("e", 10)["progress"]  # the start was 0 %: a rate already
    assert first["rate"] is not None and first["eta_at"] is not None
    phase = worker.progress("e", phase="Rendering")["progress"]  # no percent: kept
    assert (phase["rate"], phase["eta_at"]) == (first["rate"], first["eta_at"])
    assert worker.complete("e")["progress"]["eta_at"] is None
    worker.create("f")
    worker.start("f")
    worker.progress("f", 20)
    failed = worker.fail("f", "x.y")["progress"]
    assert (failed["eta_at"], failed["rate"]) == (None, None)
