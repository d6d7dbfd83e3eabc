"""The scale scenario: delivered events/s with 1 and 2 gateway processes, on one Redis and
on a 3-shard Valkey Cluster, the four side by side in one run (README, Gateway processes
and shards scale apart).

The gateway only (not its baseline: an earlier build may have no cluster mode). The
scenario starts what it needs itself: one Valkey (``EmbeddedRedis``) and a cluster of
three primaries (``EmbeddedCluster``), both for the whole scenario, and fresh gateway
processes (``python -m gateway serve``) for each configuration. Both backends get the
same tenants, two per shard of the cluster (one in a quick run; picked by the slot of their
hash tag, so that every shard carries a third of the load), each with an API key; the streams
authenticate with a token of their tenant's key in ``?access_token=`` (the load generator
sends no headers; a token is verified once, at the stream's opening).

Per configuration: every job has ``watchers`` streams (``/v1/jobs/{id}``), stream ``i``
on process ``i % processes``, so that each process watches every job (as behind a
round-robin balancer). Then a publisher process (the bench's, ``gateway.worker.Worker``,
asyncio, ``concurrency`` calls in flight) reports progress round robin over every job of
every tenant as fast as it can, for a warm-up and then the measured window. The figures
over the window: events received by all streams per second, updates published per
second, and the CPU (in % of one core) of the gateway processes, the Redis server(s), the
publisher and the load generator (this process), and how busy the whole machine was.
Rounds run the four configurations in turn (reversed in every other round), so that
drift touches all alike; their ratios within a round are the point, not the figures.

Everything shares the machine's cores: on a small machine the figure is bounded by the
CPU of the whole set-up (the report says which share went where), not by a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.contenders import Contender, Gateway
from bench.loadgen import Swarm
from bench.measure import CpuWindow, cpu_seconds, median, settle
from bench.plan import Bench
from bench.publish import Target, publish_for, published_between

Metrics = dict[str, float]
Make = Callable[[], Contender]

# The configurations, in the order a round runs them: (backend, gateway processes).
CONFIGS = (("redis", 1), ("redis", 2), ("cluster", 1), ("cluster", 2))
# How each configuration and backend reads in the table (bench/report.py).
LABELS = {"redis-1": "one Redis, 1 gateway process", "redis-2": "one Redis, 2 gateway processes",
          "cluster-1": "3-shard cluster, 1 gateway process",
          "cluster-2": "3-shard cluster, 2 gateway processes",
          "redis": "one Redis", "cluster": "3-shard cluster"}


@dataclass(frozen=True)
class Size:
    """How big the scenario is (bench/plan.py's Plan says full or quick)."""

    shards: int = 3
    tenants_per_shard: int = 2
    jobs_per_tenant: int = 50
    # Streams per job: enough that the gateway's work (a write per stream) outweighs the
    # publisher's and Redis' (a script call per update), as fan-out does.
    watchers: int = 10
    warmup_seconds: float = 2.0  # publishing before the window
    seconds: float = 8.0  # the measured window
    # Worker calls in flight in the publisher. Not more: with 16 or more, redis-py's
    # asyncio cluster client (8.1) fails some calls (a connection closed under a call in
    # flight) and its rate drops, to a third at 64; with 8 it is near its best, no errors.
    concurrency: int = 8

    @property
    def tenants(self) -> int:
        return self.shards * self.tenants_per_shard


FULL = Size()
QUICK = Size(tenants_per_shard=1, jobs_per_tenant=30, warmup_seconds=1.0, seconds=3.0)


@dataclass
class Backend:
    name: str  # "redis" or "cluster"
    url: str
    cluster: bool
    pids: list[int]
    tokens: dict[str, str]  # tenant -> a read token of the tenant's key


class _Fleet(Gateway):
    """``processes`` gateway processes on a backend that is already running (the gateway
    contender's start, without a Redis of its own)."""

    def __init__(self, workdir: Path, backend: Backend, processes: int, secret: str) -> None:
        super().__init__(workdir, processes=processes, env={
            "GATEWAY_REDIS_CLUSTER": "true" if backend.cluster else "false",
            "GATEWAY_TOKEN_SECRET": secret, "GATEWAY_HOST": "127.0.0.1"})
        self.backend = backend
        self.name = f"scale-{backend.name}-x{processes}"
        self.logs: list[Path] = []

    def _start_redis(self) -> str:
        self.target = Target("redis", self.backend.url)
        return self.backend.url

    def stop(self) -> None:
        # Where contenders._WithRedis._spawn wrote each process's output (read after).
        self.logs += [self.workdir / f"{self.name}-{port}.log" for port in self.ports]
        super().stop()

    def backend_pids(self) -> list[int]:
        return self.backend.pids


# -- set-up ----------------------------------------------------------------------------


def _tenants(slot_map: list[tuple[int, int, Any]], per_shard: int) -> list[str]:
    """``per_shard`` tenant names whose hash tag lands on each primary (tests/conftest.py
    ``tenant_per_shard``), interleaved: shard 0, 1, 2, 0, 1, 2, ..."""
    from redis.crc import key_slot

    from gateway.contract import keys

    shards = sorted({node.port for _, _, node in slot_map})
    found: dict[int, list[str]] = {port: [] for port in shards}
    for n in range(100_000):
        tenant = f"scale{n}"
        slot = key_slot(keys.tenant_channel(tenant).encode())
        port = next(node.port for start, end, node in slot_map if start <= slot <= end)
        if len(found[port]) < per_shard:
            found[port].append(tenant)
        if all(len(names) == per_shard for names in found.values()):
            break
    else:
        raise RuntimeError("no tenant names found for every shard")
    return [found[port][i] for i in range(per_shard) for port in shards]


def _prepare(backend: Backend, jobs: dict[str, list[str]], secret: str) -> dict[str, str]:
    """An API key per tenant, its jobs created and started; a read token per tenant."""
    from gateway.auth import apikeys, tokens
    from gateway.auth.principal import Principal, Scope
    from gateway.backend import nodes
    from gateway.worker import SyncWorker

    minted: dict[str, str] = {}
    with nodes.sync_client(backend.url, cluster=backend.cluster) as client:
        for tenant, ids in jobs.items():
            _, record = apikeys.create(client, tenant, Scope.READ, name="bench scale")
            principal = Principal(tenant, Scope.READ, record.key_id, "key")
            minted[tenant], _ = tokens.mint(secret.encode(), principal, Scope.READ,
                                            ttl_seconds=tokens.MAX_TTL_SECONDS, job_ids=None)
            worker = SyncWorker(client, tenant=tenant)
            for job_id in ids:
                worker.create(job_id)
                worker.start(job_id, phase="b0")
    return minted


# -- the scenario ----------------------------------------------------------------------


async def scale(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """1 and 2 gateway processes on one Redis and on a 3-shard cluster: delivered
    events/s under a publisher as fast as it goes, and where the CPU went."""
    from gateway.embedded import EmbeddedCluster, EmbeddedRedis

    size = QUICK if bench.plan.quick else FULL
    secret = secrets.token_hex(32)
    publisher = await bench.call(os.getpid)
    out: list[Metrics] = []
    with contextlib.ExitStack() as stack:
        single = stack.enter_context(EmbeddedRedis())
        cluster = stack.enter_context(EmbeddedCluster(primaries=size.shards))
        tenants = _tenants(cluster.slot_map(), size.tenants_per_shard)
        jobs = {t: [f"s{n:03d}" for n in range(size.jobs_per_tenant)] for t in tenants}
        backends = {
            "redis": Backend("redis", single.url, False, _pids([single]), {}),
            "cluster": Backend("cluster", cluster.url, True, _pids(cluster.nodes), {})}
        for backend in backends.values():
            backend.tokens = await asyncio.to_thread(_prepare, backend, jobs, secret)
        # Round robin over the jobs of all tenants: consecutive updates go to other jobs,
        # tenants and shards.
        order = [(t, jobs[t][n]) for n in range(size.jobs_per_tenant) for t in tenants]
        first = 1
        for r in range(rounds):
            m: Metrics = {"cores": float(os.cpu_count() or 0), "tenants": len(tenants),
                          "jobs": len(order), "watchers_per_job": size.watchers,
                          "streams": len(order) * size.watchers, "window_s": size.seconds}
            for name, processes in (CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))):
                print(f"bench: scale round {r + 1}: {LABELS[f'{name}-{processes}']} ...",
                      flush=True, file=sys.stderr)
                got, first = await _configuration(bench, backends[name], processes, order,
                                                  size, secret, publisher, first)
                m.update({f"{k}@{name}-{processes}": v for k, v in got.items()})
            for name in ("redis", "cluster"):
                one, two = m.get(f"events_per_s@{name}-1"), m.get(f"events_per_s@{name}-2")
                m[f"x2_over_x1@{name}"] = two / one if one and two else float("nan")
            for processes in (1, 2):
                single_rate = m.get(f"events_per_s@redis-{processes}")
                sharded = m.get(f"events_per_s@cluster-{processes}")
                m[f"cluster_over_redis@x{processes}"] = (
                    sharded / single_rate if single_rate and sharded else float("nan"))
            out.append(m)
    return out


def _pids(servers: list[Any]) -> list[int]:
    return [p.pid for s in servers if (p := getattr(s, "_process", None)) is not None]


async def _configuration(bench: Bench, backend: Backend, processes: int,
                         order: list[tuple[str, str]], size: Size, secret: str,
                         publisher: int, first: int) -> tuple[Metrics, int]:
    """One configuration: fresh gateway processes, the streams, the publisher; its
    metrics and the next update's k."""
    plan = bench.plan
    paths = [f"/v1/jobs/{job_id}?access_token={backend.tokens[tenant]}"
             for tenant, job_id in order for _ in range(size.watchers)]
    fleet = _Fleet(bench.workdir, backend, processes, secret)
    try:
        with fleet:
            swarm = Swarm(fleet.ports)
            try:
                await swarm.open(len(paths), lambda i: paths[i],
                                 concurrency=plan.open_concurrency, within=plan.open_timeout)
                if swarm.live() < len(paths):
                    failures = ", ".join(f"{k}: {v}" for k, v in swarm.failures.items())
                    bench.note(f"scale / {fleet.name}: {swarm.live()} of {len(paths)} streams "
                               f"opened ({failures or 'no failures'})")
                await settle(fleet.server_pids())
                m, first = await _drive(bench, fleet, swarm, backend, order, size, publisher,
                                        first)
            finally:
                swarm.close()
    finally:
        problems = _log_problems(fleet.logs)
    m["log_problems"] = sum(problems.values())
    if problems:
        shown = "; ".join(f"{n}x {text}" for text, n in list(problems.items())[:3])
        bench.note(f"scale / {fleet.name}: warnings or errors in the gateway log: {shown}")
    return m, first


async def _drive(bench: Bench, fleet: _Fleet, swarm: Swarm, backend: Backend,
                 order: list[tuple[str, str]], size: Size, publisher: int,
                 first: int) -> tuple[Metrics, int]:
    loop = asyncio.get_running_loop()
    opened = swarm.events  # the opening snapshots
    duration = size.warmup_seconds + size.seconds + 1.5  # the bench's window fits inside
    sent: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(bench.call(
        publish_for, backend.url, backend.cluster, order, duration, size.concurrency, first))
    try:
        # Publishing has begun once an update arrives (the publisher's process is warm).
        started = await swarm.until(lambda: swarm.events > opened or sent.done(), within=30.0,
                                    poll=0.01)
        if sent.done():
            sent.result()  # a publisher that failed fails the configuration
            raise RuntimeError("the publisher ended before any update arrived")
        if not started:
            raise RuntimeError("no update arrived within 30 s of the publisher's start")
        await asyncio.sleep(size.warmup_seconds)
        window = CpuWindow(fleet.server_pids(), fleet.backend_pids())
        publisher_before, machine_before = cpu_seconds([publisher]), psutil.cpu_times()
        e0, w0 = swarm.events, time.time_ns()
        window.start()
        await asyncio.sleep(size.seconds)
        e1, w1 = swarm.events, time.time_ns()
        window.stop()
        publisher_cpu = cpu_seconds([publisher]) - publisher_before
        machine = psutil.cpu_times()
        result = await asyncio.wait_for(sent, duration + 90)
    finally:
        if not sent.done():
            sent.cancel()
    # Until the streams got what is in flight: no event for 1 s (at most 15 s).
    deadline, seen, quiet_since = loop.time() + 15.0, swarm.events, loop.time()
    while loop.time() < deadline and loop.time() - quiet_since < 1.0:
        await asyncio.sleep(0.05)
        if swarm.events != seen:
            seen, quiet_since = swarm.events, loop.time()
    if result["errors"]:
        bench.note(f"scale / {fleet.name}: publisher errors "
                   f"{json.dumps(result['errors'], sort_keys=True)}")
    seconds = (w1 - w0) / 1e9
    delivered = e1 - e0
    published = published_between(result, w0, w1)
    # Each update goes to every stream of its job; a gateway may fold a slow stream's
    # pending updates of a job into the latest (README, Event streams).
    expected = result["done"] * swarm.live() / max(len(order), 1)
    wall = window.wall or 1e-9
    busy, total = (a - b for a, b in zip(_busy(machine), _busy(machine_before), strict=True))
    softirq = machine.softirq - machine_before.softirq
    known = window.server + window.backend + window.client + publisher_cpu
    m: Metrics = {
        "events_per_s": delivered / seconds,
        "publish_per_s": published / seconds,
        "events_per_update": delivered / published if published else float("nan"),
        "conflated": 1 - (swarm.events - opened) / expected if expected else float("nan"),
        "gateway_cpu": window.shares()["server"] * 100,
        "redis_cpu": window.shares()["backend"] * 100,
        "publisher_cpu": publisher_cpu / wall * 100,
        "client_cpu": window.shares()["client"] * 100,
        # The whole machine, in % of all its cores (100 = every core busy).
        "machine_cpu": busy / total * 100 if total > 0 else float("nan"),
        # Busy CPU none of those processes was charged with (other processes, and the
        # kernel's softirq work: loopback TCP), and the softirq part, in % of one core.
        "other_cpu": (busy - known) / wall * 100,
        "softirq_cpu": softirq / wall * 100,
        "gateway_us_per_event": window.server / max(delivered, 1) * 1e6,
        "streams": swarm.live(),
        "publisher_errors": sum(result["errors"].values()),
    }
    return m, int(result["next"])


def _busy(times: Any) -> tuple[float, float]:
    """CPU seconds of all cores so far: (busy, all), neither idle nor waiting for I/O in
    busy; steal (another guest's) counts as busy, guest time is in user already."""
    busy = (times.user + times.nice + times.system + times.irq + times.softirq
            + times.steal)
    return busy, busy + times.idle + times.iowait


def _log_problems(logs: list[Path]) -> dict[str, int]:
    """Warnings and errors in the gateways' logs (JSON lines), by message; other lines
    that are no JSON (a traceback) count too."""
    found: dict[str, int] = {}
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                text = line.strip()[:160]
            else:
                if not isinstance(entry, dict) or entry.get("level") not in (
                        "warning", "error", "critical"):
                    continue
                text = f"{entry.get('level')}: {str(entry.get('msg'))[:160]}"
            found[text] = found.get(text, 0) + 1
    return found


# -- the report ------------------------------------------------------------------------

# The section of RESULTS.md: each configuration's medians side by side.
_SIDE_BY_SIDE = (
    ("events_per_s", "delivered events/s (all streams)"),
    ("publish_per_s", "updates published/s"),
    ("events_per_update", "events delivered per update published"),
    ("conflated", "share of update events folded away (whole run)"),
    ("gateway_us_per_event", "gateway CPU per delivered event (µs)"),
    ("gateway_cpu", "gateway CPU, all processes (% of a core)"),
    ("redis_cpu", "Redis CPU, all servers (% of a core)"),
    ("publisher_cpu", "publisher CPU (% of a core)"),
    ("client_cpu", "load generator CPU (% of a core)"),
    ("other_cpu", "anything else busy: kernel softirq (loopback TCP), other processes "
                  "(% of a core)"),
    ("machine_cpu", "whole machine busy (% of all cores)"),
)


def section(rounds: list[dict[str, float]], machine: str,
            fmt: Callable[[float | None], str]) -> list[str]:
    """The scale scenario in RESULTS.md: a table of the four configurations, the core
    count beside it, and what bounds the figure on this machine."""
    if not rounds:
        return []

    def med(key: str) -> float:
        return median([m[key] for m in rounds if key in m])

    first = rounds[0]
    cores = int(first.get("cores", 0))
    lines = [
        "## Scale: gateway processes and backends",
        "",
        f"Measured on {machine}: **{cores} cores** (`os.cpu_count()`), shared by "
        f"everything below. {int(first['streams']):,} streams ({int(first['jobs'])} jobs "
        f"of {int(first['tenants'])} tenants, {int(first['watchers_per_job'])} streams per "
        f"job, spread evenly over the gateway processes), a publisher as fast as it goes, "
        f"a {first['window_s']:.0f} s window; medians of {len(rounds)} round(s).",
        "",
        "| metric | " + " | ".join(LABELS[f"{b}-{p}"] for b, p in CONFIGS) + " |",
        "| --- | " + " | ".join("---:" for _ in CONFIGS) + " |",
    ]
    for key, text in _SIDE_BY_SIDE:
        values = [med(f"{key}@{b}-{p}") for b, p in CONFIGS]
        if any(v == v for v in values):
            lines.append(f"| {text} | " + " | ".join(fmt(v) for v in values) + " |")
    ratios = {name: med(f"x2_over_x1@{name}") for name in ("redis", "cluster")}
    across = {p: med(f"cluster_over_redis@x{p}") for p in (1, 2)}
    lines += ["", "Ratios of delivered events/s within each round (medians): 2 processes / "
              "1 process: " + ", ".join(f"{LABELS[n]} {fmt(v)}x" for n, v in ratios.items())
              + "; cluster / one Redis: "
              + ", ".join(f"{p} process{'es' if p > 1 else ''} {fmt(v)}x"
                          for p, v in across.items()) + ".", ""]
    return lines + _bound(cores, med, fmt)


def _bound(cores: int, med: Callable[[str], float],
           fmt: Callable[[float | None], str]) -> list[str]:
    """What bounds the figure on this machine, read off the CPU measured beside it."""
    busy = [med(f"machine_cpu@{b}-{p}") for b, p in CONFIGS]
    busy = [v for v in busy if v == v] or [float("nan")]
    lines = ["What bounds the figure here:", ""]
    groups = ("gateway_cpu", "redis_cpu", "publisher_cpu", "client_cpu")
    top = max(med(f"{key}@{b}-{p}") for key in groups for b, p in CONFIGS)
    if min(busy) >= 85:
        alone = ("no process group was near a full core (at most "
                 f"{top:.0f} %)" if top < 90 else f"one process group was at {top:.0f} % "
                 "of a core (below)")
        lines.append(
            f"- The machine's CPU: its {cores} cores were {min(busy):.0f}-{max(busy):.0f} % "
            f"busy (of all cores) over the window in every configuration, and {alone}: the "
            f"gateway process(es), the Redis server (or the three cluster primaries), the "
            f"publisher and the load generator took turns on the same cores. A second "
            f"gateway process, or three shards instead of one Redis, adds work (each gateway "
            f"process subscribes to every job's channel and reads every update; three "
            f"servers to schedule instead of one) and no core, so here they can only move "
            f"the figure by how that work shares the same cores: the ratios above say so "
            f"much, not how either scales with cores of its own.")
    else:
        lines.append(f"- Not the machine as a whole: it was {min(busy):.0f}-{max(busy):.0f} % "
                     f"busy (of all cores) over the window.")
    lines.append(
        "- The publisher is a closed loop (a fixed number of worker calls in flight): it "
        "publishes as fast as it and Redis get the CPU, and each update is one event for "
        "every stream of its job, so delivered events/s = updates/s x streams per job, "
        "less what the gateway folds away.")
    folded = {f"{b}-{p}": med(f"conflated@{b}-{p}") for b, p in CONFIGS}
    if any(v == v and v >= 0.02 for v in folded.values()):
        lines.append(
            "- Where updates were folded away, the gateway fell behind the publisher (a "
            "stream's pending updates of a job are folded into the latest when its process "
            "cannot write them in time: README, Event streams), so there the gateway's share "
            "of the CPU bounds the figure: folded " + ", ".join(
                f"{fmt(v * 100)} % with {LABELS[k]}" for k, v in folded.items()) + ".")
    else:
        lines.append("- No configuration folded updates away: every stream got every update, "
                     "so the gateway kept up and the publisher's rate set the figure.")
    for b, p in CONFIGS:
        for who, key in (("the load generator", "client_cpu"), ("the publisher",
                                                                  "publisher_cpu")):
            if med(f"{key}@{b}-{p}") >= 90:
                lines.append(f"- {LABELS[f'{b}-{p}']}: {who} was at "
                             f"{med(f'{key}@{b}-{p}'):.0f} % of its one core: it bounds "
                             f"that figure.")
    return [*lines, ""]
