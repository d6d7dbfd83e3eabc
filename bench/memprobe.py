"""The gateway under tracemalloc: where the memory of an idle stream goes (bench only).

py-spy shows where CPU goes, not memory. This runs the same app as ``gateway serve``
(``gateway.app.create_app`` under uvicorn with the same settings and logging) with
tracemalloc on. SIGUSR1 takes a baseline snapshot; SIGUSR2 writes the growth since then,
per file and per line, to the file named by ``--out`` as JSON. What tracemalloc does not
see (memory that C code such as uvloop or httptools allocates itself) is the difference
between the resident-set growth and the traced growth.

    REDIS_URL=... python -m bench.memprobe --port 8000 --out /tmp/growth.json
"""

from __future__ import annotations

import argparse
import json
import signal
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.observability import logs
from gateway.server import protocol
from gateway.settings import Settings


def _growth(baseline: tracemalloc.Snapshot, key: str, top: int) -> list[dict[str, Any]]:
    now = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = now.compare_to(baseline, key)
    return [{"where": str(s.traceback[0]), "bytes": s.size_diff, "count": s.count_diff}
            for s in stats[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tracemalloc.start(1)
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    app = create_app(settings)
    baseline: list[tracemalloc.Snapshot] = []

    def mark(*_: object) -> None:
        baseline[:] = [tracemalloc.take_snapshot()]

    def dump(*_: object) -> None:
        if not baseline:
            return
        by_file = _growth(baseline[0], "filename", 15)
        by_line = _growth(baseline[0], "lineno", 25)
        total = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(
            baseline[0], "filename"))
        partial = args.out.with_suffix(".partial")
        partial.write_text(json.dumps({"total": total, "files": by_file, "lines": by_line}))
        partial.rename(args.out)  # the bench waits for this name: never half written

    signal.signal(signal.SIGUSR1, mark)
    signal.signal(signal.SIGUSR2, dump)
    # As gateway serve runs it (gateway.cli): its own HTTP protocol class included.
    uvicorn.run(app, host=settings.host, port=args.port, log_config=None, access_log=False,
                log_level=settings.log_level, http=protocol(settings),
                timeout_keep_alive=settings.keepalive_seconds)


if __name__ == "__main__":
    main()
