"""The demo's simulated workers, and the people who use them.

A producer creates jobs at a steady rate (as a backend service would, through the worker
library's ``create``); several workers take them in turn and run them through their
phases, reporting progress through the same update script as real workers; one job in
eight fails, one in eight is canceled by a simulated user (through the same
``request_cancel`` the HTTP cancel runs), and every worker stops a job whose
``cancel_requested`` it sees in a report's answer, so the dashboard's Cancel button works
on the demo's jobs as it does on real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

import redis.exceptions

from gateway.contract.keys import DEFAULT_TENANT
from gateway.demo import kinds
from gateway.errors import ChangeRefused, JobAlreadyExists
from gateway.worker import Worker

log = logging.getLogger("gateway.demo")


class Fate(Enum):
    COMPLETE = "complete"
    FAIL = "fail"
    USER_CANCELS = "user cancels it while it runs"
    USER_CANCELS_QUEUED = "user cancels it before it starts"


# Dealt in shuffled decks: one job in eight fails and one in eight is canceled, and the
# first eight jobs show every ending, so that the page has each of them within seconds.
_OPENING = [Fate.COMPLETE] * 5 + [Fate.FAIL, Fate.USER_CANCELS, Fate.USER_CANCELS_QUEUED]
_DECK = [Fate.COMPLETE] * 12 + [Fate.FAIL] * 2 + [Fate.USER_CANCELS, Fate.USER_CANCELS_QUEUED]


# The demo's jobs disappear ten minutes after they end (outputs after five), so a demo
# left running shows a steady page, not an ever longer one.
RETENTION_SECONDS, OUTPUT_TTL_SECONDS = 600, 300


def demo_worker(url: str, tenant: str = DEFAULT_TENANT, *, cluster: bool = False) -> Worker:
    """The worker library as the simulated workers use it: with the demo's lifetimes
    (``cluster``: ``url`` names a Valkey/Redis Cluster, as GATEWAY_REDIS_CLUSTER says)."""
    return Worker.from_url(url, cluster=cluster, tenant=tenant,
                           retention_seconds=RETENTION_SECONDS,
                           output_ttl_seconds=OUTPUT_TTL_SECONDS)


@dataclass(frozen=True)
class Options:
    rate: float = 0.5  # new jobs per second
    workers: int = 6
    duration: float = 0.0  # seconds; 0: until stopped
    seed: int | None = None


@dataclass
class _Job:
    job_id: str
    plan: kinds.Plan
    fate: Fate


class Simulation:
    def __init__(self, worker: Worker, options: Options, *, output_base: str) -> None:
        self.worker = worker
        self.options = options
        self.output_base = output_base  # where the pretend outputs are served
        self.rng = random.Random(options.seed)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._deck = self.rng.sample(_OPENING, len(_OPENING))
        self.created = 0
        self._tasks: asyncio.TaskGroup  # set by run()

    def _fate(self) -> Fate:
        if not self._deck:
            self._deck = self.rng.sample(_DECK, len(_DECK))
        return self._deck.pop()

    async def run(self) -> None:
        """Create and run jobs until cancelled. A Redis error is waited out (the demo stops
        by itself if its Valkey dies: gateway.demo.launch)."""
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            for n in range(self.options.workers):
                tg.create_task(self._work(n))
            tg.create_task(self._produce())

    async def _produce(self) -> None:
        # A first deck at once, short ones, so the page shows every ending within seconds.
        for _ in range(len(_OPENING)):
            await self._outlasting(self._create(fast=True))
        while True:
            # At least 10 ms: a full backlog at a high rate must not spin.
            await asyncio.sleep(max(0.01, self.rng.expovariate(self.options.rate)))
            # A backlog is realistic; an endless one is not.
            if self.queue.qsize() < 2 * self.options.workers:
                await self._outlasting(self._create(fast=False))

    async def _outlasting(self, change: Coroutine[Any, Any, None]) -> None:
        try:
            await change
        except redis.exceptions.RedisError as exc:
            log.warning("the demo's Valkey did not answer (%s); going on in a second", exc)
            await asyncio.sleep(1)

    async def _create(self, *, fast: bool) -> None:
        kind = self.rng.choice(kinds.KINDS)
        plan = kinds.plan(kind, self.rng, fast=fast)
        while True:
            job = _Job(f"{kind.source_format}-{secrets.token_hex(4)}", plan, self._fate())
            try:
                await self.worker.create(job.job_id, conversion={
                    "source_format": plan.source_format, "target_format": plan.target_format,
                    "original_filename": plan.file_name,
                    "source_size_bytes": plan.source_size_bytes})
                break
            except JobAlreadyExists:
                continue  # one in four billion: another id
        self.created += 1
        if job.fate is Fate.USER_CANCELS_QUEUED:
            self._user_cancels(job.job_id, after=self.rng.uniform(0.5, 3))
        await self.queue.put(job)

    def _user_cancels(self, job_id: str, *, after: float = 0.0) -> None:
        """A user presses Cancel (the same request_cancel as POST .../cancel)."""
        async def cancel() -> None:
            await asyncio.sleep(after)
            with contextlib.suppress(ChangeRefused, redis.exceptions.RedisError):
                await self.worker.request_cancel(job_id)
        self._tasks.create_task(cancel())  # cancelled with the rest when the demo stops

    async def _work(self, number: int) -> None:
        while True:
            job = await self.queue.get()
            await asyncio.sleep(self.rng.uniform(0.1, 0.8))  # picking it up
            try:
                await self._outlasting(self._run(job))
            except ChangeRefused as refused:
                # Canceled before it started (or by someone meanwhile): next job.
                log.debug("worker %d: %s", number, refused)

    async def _run(self, job: _Job) -> None:
        plan, worker, job_id = job.plan, self.worker, job.job_id
        await worker.start(job_id, phase=plan.steps[0].phase)
        fail_at = len(plan.steps) * self.rng.uniform(0.15, 0.85)
        cancel_at = len(plan.steps) * self.rng.uniform(0.2, 0.7)
        for n, step in enumerate(plan.steps):
            await asyncio.sleep(step.pause)
            if job.fate is Fate.FAIL and n >= fail_at:
                code, message = plan.failure
                await worker.fail(job_id, code, message)
                return
            if job.fate is Fate.USER_CANCELS and n >= cancel_at:
                job.fate = Fate.COMPLETE  # asked once
                self._user_cancels(job_id)
            snapshot = await worker.progress(job_id, step.percent, phase=step.phase)
            if snapshot["cancel_requested"]:
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))  # stopping the converter
                await worker.cancel(job_id)
                return
        output = plan.output
        await worker.complete(
            job_id, file_url=f"{self.output_base}/{job_id}/{quote(output.file_name)}",
            file_name=output.file_name, content_type=output.content_type,
            file_size_bytes=output.file_size_bytes, file_count=output.file_count,
            metrics=plan.metrics)
