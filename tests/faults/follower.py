"""A client in a process of its own (so that a test can SIGSTOP it): follows one job
with the raw Observer and writes what it saw to a file, then the final snapshot."""

from __future__ import annotations

import json
import sys

import anyio
from observe import Observer


async def main(url: str, job_id: str, out_path: str) -> None:
    observer = Observer(url, f"/v1/jobs/{job_id}", jobs={job_id})

    class Log(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            super().append(item)
            with open(out_path, "a") as out:
                out.write(f"seen {json.dumps(item)}\n")

    observer.seen[job_id] = Log()
    await observer.run(timeout=120)
    with open(out_path, "a") as out:
        out.write(f"final {json.dumps(observer.last[job_id])}\n")
        out.write(f"connections {observer.connections}\n")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
