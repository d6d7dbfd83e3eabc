"""A pretend conversion worker: run it and watch its job move.

    REDIS_URL=redis://127.0.0.1:PORT/0 .venv/bin/python examples/worker.py [JOB_ID]

It registers the job at once (a job of that id that already ended is deleted and made
afresh, so the example can run again; a queued one is taken as it is), waits three
seconds for you to start a `curl`, then reports each phase and percent every half
second and completes with a (pretend) presigned output URL.
"""

from __future__ import annotations

import os
import sys
import time

import redis

from gateway import ChangeRefused, JobAlreadyExists, SyncWorker

PHASES = [("Loading document", 0, 20), ("Rendering pages", 20, 80), ("Writing PDF", 80, 100)]
CONVERSION = {"source_format": "docx", "target_format": "pdf",
              "original_filename": "report.docx"}
ENDED = ("completed", "failed", "canceled")


def register(worker: SyncWorker, job_id: str) -> None:
    """Create the job; make it afresh if a job of that id already ended."""
    try:
        worker.create(job_id, conversion=CONVERSION)
        return
    except JobAlreadyExists as exc:
        status = exc.status
    if status in ENDED:
        worker.delete(job_id)
        worker.create(job_id, conversion=CONVERSION)
    elif status != "queued":
        sys.exit(f"examples/worker.py: job {job_id!r} is {status} under another worker; "
                 "give another id")


def run(worker: SyncWorker, job_id: str) -> None:
    register(worker, job_id)
    say(f"job {job_id}: created; starting in 3 s "
        f"(curl -N -H 'Accept: text/event-stream' http://127.0.0.1:8000/v1/jobs/{job_id})")
    time.sleep(3)
    worker.start(job_id, phase=PHASES[0][0])
    for phase, start, end in PHASES:
        for percent in range(start, end, 10):
            worker.progress(job_id, percent, phase=phase)
            time.sleep(0.5)
    snapshot = worker.complete(
        job_id,
        file_url=f"https://files.example/{job_id}/report.pdf?signature=pretend",
        file_name="report.pdf",
        content_type="application/pdf",
        file_size_bytes=612345,
    )
    say(f"job {job_id}: {snapshot['status']} (version {snapshot['version']})")


def say(line: str) -> None:
    # One write per line: beside a client printing to the same terminal, a line of ours
    # never lands in the middle of one of its lines, or the other way round.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    url = os.environ.get("REDIS_URL")
    if not url:
        print("examples/worker.py: set REDIS_URL to the Redis the gateway uses "
              "(`gateway serve` prints it)", file=sys.stderr)
        return 2
    job_id = sys.argv[1] if len(sys.argv) > 1 else "demo"
    try:
        with SyncWorker.from_url(url) as worker:
            run(worker, job_id)
    except (ValueError, redis.RedisError) as exc:  # a bad URL; Redis unreachable or refusing
        print(f"examples/worker.py: REDIS_URL: {exc}", file=sys.stderr)
        return 2
    except ChangeRefused as exc:  # someone else moved the job meanwhile
        print(f"examples/worker.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
