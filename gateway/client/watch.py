"""``gateway watch``: a person's view of jobs moving, in a terminal (docs/client.md).

One progress bar per job with its phase and the time left (docs/api.md, Time left); a
line when a job ends, with the output file name or the error. Exit status: 0 when every
watched job completed, 1 when any failed or was canceled, 2 when a job does not exist or
the gateway cannot be reached, 130 when interrupted (Ctrl-C) before the named jobs ended.
With ``--all`` (which runs until Ctrl-C) it is 0, or 1 when any job it saw end failed or
was canceled.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from datetime import datetime

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from gateway.client._client import Client, ClientError, Job, JobEvent, Unreachable


def _ending(job: Job) -> str:
    if job.status == "completed":
        name = job.output.file_name if job.output and job.output.file_name else "(no file name)"
        return f"[green]✓ {job.job_id} completed[/green]: {name}"
    if job.status == "failed" and job.error is not None:
        return f"[red]✗ {job.job_id} failed[/red]: {job.error.code} {job.error.message}".rstrip()
    return f"[yellow]✗ {job.job_id} {job.status}[/yellow]"


def time_left(eta_at: str | None, now: float) -> str:
    """``about 40 s left``, from the snapshot's estimate and this clock; empty without
    one."""
    if not eta_at:
        return ""
    try:
        left = datetime.fromisoformat(eta_at.replace("Z", "+00:00")).timestamp() - now
    except ValueError:
        return ""
    if left < 1:
        return "almost done"
    if left < 90:
        return f"about {round(left)} s left"
    if left < 90 * 60:
        return f"about {round(left / 60)} min left"
    return f"about {round(left / 3600)} h left"


class _Left(ProgressColumn):
    """Counts down between events: computed at each redraw, not at each event."""

    def render(self, task: Task) -> Text:
        return Text(time_left(task.fields.get("eta_at"), time.time()), style="dim")


class _View:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.ended: dict[str, str] = {}

    def show(self, job: Job) -> None:
        if self.progress is None:  # --json: one snapshot per line, for scripts
            print(json.dumps(dataclasses.asdict(job), separators=(",", ":")), flush=True)
        else:
            label = job.job_id + (f" · {job.progress.phase}" if job.progress.phase else "")
            task = self.tasks.get(job.job_id)
            if task is None:
                task = self.tasks[job.job_id] = self.progress.add_task(
                    label, total=100, state=job.status, eta_at=job.progress.eta_at)
            self.progress.update(task, completed=job.progress.percent, description=label,
                                 state=job.status, eta_at=job.progress.eta_at)
            if job.terminal and job.job_id not in self.ended:
                self.progress.console.print(_ending(job))
        if job.terminal:
            self.ended[job.job_id] = job.status


def watch(url: str, job_ids: list[str] | None, *, as_json: bool,
          api_key: str | None = None) -> int:
    console = Console(stderr=False)
    progress = None if as_json else Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[state]}"), _Left(), console=console)
    view = _View(progress)
    wanted = set(job_ids or [])
    try:
        # The client retries a broken stream for ever (a gateway restart is a pause);
        # a gateway that cannot be reached at all is an error at once.
        httpx.get(f"{url.rstrip('/')}/healthz", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"gateway watch: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(url, api_key=api_key) as client:
            if progress is not None:
                progress.start()
            try:
                event: JobEvent
                for event in client.follow_many(job_ids):
                    if event.event == "unknown":
                        print(f"gateway watch: no job {', '.join(event.missing)}",
                              file=sys.stderr)
                        return 2
                    if event.event == "reset":
                        print("gateway watch: too many jobs to show at once; showing the "
                              "jobs that change from now on", file=sys.stderr)
                    elif event.event == "deleted" and event.job_id:
                        view.ended.setdefault(event.job_id, "deleted")
                    elif event.job is not None:
                        view.show(event.job)
                    if wanted and wanted <= view.ended.keys():
                        break
            finally:
                if progress is not None:
                    progress.stop()
    except (ClientError, Unreachable) as exc:  # refused; or gone before it was reached
        print(f"gateway watch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if wanted and not wanted <= view.ended.keys():
            return 130
    return 0 if all(status == "completed" for status in view.ended.values()) else 1
