"""How big each scenario is (full and quick runs), and what every scenario shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.contenders import Contender
from bench.measure import Profile, profiled

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """Counts and times of one run: the full plan (the README's table), or quick (a smoke
    test)."""

    quick: bool = False
    rounds: int = 3
    idle_checkpoints: tuple[int, ...] = (1000, 5000)
    idle_to_fd_limit: bool = True  # and then as many as the descriptor limit allows
    heartbeat_streams: int = 10_000
    heartbeat_seconds: float | None = None  # None: each server's default (15 s)
    heartbeat_windows: int = 3
    fanout_watchers: int = 1000
    fanout_updates: int = 25
    throughput_jobs: int = 1000
    throughput_updates: int = 100_000
    latency_updates: int = 500
    latency_rate: float = 100.0
    json_seconds: float = 4.0
    json_connections: int = 32
    burst_watchers: int = 300
    burst_updates: int = 3000
    burst_probe_every: float = 0.005  # seconds between /healthz requests during a burst
    dashboard_jobs: int = 500  # on the page, half of them running
    dashboard_rate: float = 200.0  # updates per second, spread over the running jobs
    dashboard_seconds: float = 10.0  # the loaded window
    dashboard_idle_seconds: float = 3.0  # the idle window before it
    dashboard_warmup_seconds: float = 1.0  # updates before the idle window, not measured
    open_concurrency: int = 100
    open_timeout: float = 120.0
    drain_timeout: float = 120.0

    @classmethod
    def quick_plan(cls) -> Plan:
        # Small counts and a 2 s heartbeat so that the whole run stays under 2 minutes;
        # numbers from it are a smoke test, not results.
        return cls(quick=True, rounds=1, idle_checkpoints=(200, 1000), idle_to_fd_limit=False,
                   heartbeat_streams=1000, heartbeat_seconds=2.0, heartbeat_windows=2,
                   fanout_watchers=200, fanout_updates=20, throughput_jobs=200,
                   throughput_updates=10_000, latency_updates=200, json_seconds=2.0,
                   burst_watchers=100, burst_updates=1000, dashboard_seconds=5.0,
                   open_timeout=30.0, drain_timeout=30.0)


@dataclass
class Bench:
    """What the scenarios share: the plan, the publisher process, where files go."""

    plan: Plan
    workdir: Path
    pool: ProcessPoolExecutor
    client_streams: int  # how many sockets this process may hold open
    wrk: str | None
    profile_dir: Path | None = None  # set for a profiling round of the gateway
    extra_round: bool = False  # a profiling or what-if round: short, not in the medians
    profiles: dict[str, Profile] = field(default_factory=dict)
    extra_profiles: dict[str, str] = field(default_factory=dict)  # already rendered text
    notes: list[str] = field(default_factory=list)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a bench.publish function in the publisher process."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @contextlib.contextmanager
    def profiling(self, contender: Contender, scenario: str) -> Iterator[None]:
        """py-spy on the gateway during a measurement, in a profiling round only."""
        if self.profile_dir is None or contender.column != "gateway":
            yield
            return
        path = self.profile_dir / f"{scenario}.txt"
        with profiled(contender.server_pids()[0], path) as profile:
            yield
        self.profiles[scenario] = profile
