"""A pretend conversion worker: run it and watch its job move.

    REDIS_URL=redis://127.0.0.1:PORT/0 .venv/bin/python examples/worker.py [JOB_ID]

It registers the job (unless it exists), then reports each phase and percent every
half second, and completes with a (pretend) presigned output URL.
"""

from __future__ import annotations

import os
import sys
import time

from gateway import JobAlreadyExists, SyncWorker

PHASES = [("Loading document", 0, 20), ("Rendering pages", 20, 80), ("Writing PDF", 80, 100)]


def main() -> None:
    job_id = sys.argv[1] if len(sys.argv) > 1 else "demo"
    with SyncWorker.from_url(os.environ["REDIS_URL"]) as worker:
        try:
            worker.create(job_id, conversion={"source_format": "docx", "target_format": "pdf",
                                              "original_filename": "report.docx"})
        except JobAlreadyExists:
            pass
        print(f"job {job_id}: curl -N -H 'Accept: text/event-stream' "
              f"http://127.0.0.1:8000/v1/jobs/{job_id}", flush=True)
        time.sleep(2)  # time to start that curl
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
        print(f"job {job_id}: {snapshot['status']} (version {snapshot['version']})")


if __name__ == "__main__":
    main()
