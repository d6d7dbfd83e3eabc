"""The seven scenarios of job streams (README, Benchmarks), and the registry of all of
them, with the dashboard's (bench/dashboard.py) and the scale scenario's (bench/scale.py).
Each runs its rounds against one contender: the bench runs a contender only in the
scenarios it serves (``Contender.scenarios``).

A scenario gets a factory for the contender and returns one dict of metrics per round.
Servers are started fresh where state would carry over (idle streams: resident memory
never shrinks back; heartbeats), and reused across the rounds of the others, after a
warm-up. Every wait is bounded by the plan's timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from bench import publish
from bench.contenders import Contender, Gateway
from bench.dashboard import dashboard
from bench.loadgen import Probe, Swarm, http_load
from bench.measure import CpuWindow, percentile, rss_bytes, settle
from bench.plan import Bench
from bench.scale import scale

Metrics = dict[str, float]
Make = Callable[[], Contender]
Scenario = Callable[[Bench, Make, int], Awaitable[list[Metrics]]]

_WARM = 100  # streams opened before the memory baseline: first-use costs are not per stream


def _rate(stamps: list[int]) -> float:
    """Streams per second between the first and the last of these kernel timestamps."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return float("nan")
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)


async def _open(bench: Bench, swarm: Swarm, c: Contender, count: int, prefix: str) -> int:
    return await swarm.open(count, lambda i: c.stream_path(f"{prefix}{i}"),
                            concurrency=bench.plan.open_concurrency,
                            within=bench.plan.open_timeout)


def _stream_cap(bench: Bench, c: Contender) -> int:
    return min(c.max_streams, bench.client_streams)


# -- 1. idle streams ------------------------------------------------------------------


async def idle(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """Hold 1,000, 5,000 and as many streams as descriptors allow; memory and accept rate."""
    out = []
    for _ in range(rounds):
        with make() as c:
            out.append(await _idle_round(bench, c))
    return out


async def _idle_round(bench: Bench, c: Contender) -> Metrics:
    plan = bench.plan
    # A profiled or what-if round stops at the last checkpoint: py-spy slows the server
    # down, and the cost per stream shows long before the descriptor limit.
    to_limit = plan.idle_to_fd_limit and not bench.extra_round
    top = _stream_cap(bench, c) if to_limit else max(plan.idle_checkpoints)
    marks = [(n, str(n)) for n in plan.idle_checkpoints if n < top]
    marks.append((top, "max" if to_limit else str(top)))
    await bench.call(publish.setup, c.target, [f"idle{i}" for i in range(top)], running=False)
    swarm = Swarm(c.ports)
    m: Metrics = {}
    try:
        await _open(bench, swarm, c, _WARM, "idle")
        pids, mem_pids = c.server_pids(), c.memory_pids()
        await settle(pids)
        base, base_redis = _rss(mem_pids), _rss(c.backend_pids())
        first_rate = float("nan")
        opened, ramp_seconds = 0, 0.0
        window = CpuWindow(pids, c.backend_pids())
        with bench.profiling(c, "idle"):
            for target, label in marks:
                before = swarm.accepted
                window.start()
                await _open(bench, swarm, c, target - before, "idle")
                window.stop()
                stamps = swarm.accepted_ns[before:]
                rate = _rate(stamps)
                first_rate = rate if first_rate != first_rate else first_rate
                if len(stamps) > 1:
                    opened += len(stamps) - 1
                    ramp_seconds += (stamps[-1] - stamps[0]) / 1e9
                await settle(pids)
                held = swarm.live() - _WARM
                m[f"mem_kib@{label}"] = (_rss(mem_pids) - base) / max(held, 1) / 1024
                if c.backend_pids():
                    grown = _rss(c.backend_pids()) - base_redis
                    helper = c.backend_name  # redis; pushpin's GRIP backend: grip
                    m[f"{helper}_kib@{label}"] = grown / max(held, 1) / 1024
                    m[f"{helper}_rss_mib@{label}"] = _rss(c.backend_pids()) / 2**20
                    m[f"{helper}_cpu@{label}"] = window.shares()["backend"] * 100
                m[f"rate@{label}"] = rate
                m[f"client_cpu@{label}"] = window.shares()["client"] * 100
                m[f"server_cpu@{label}"] = window.shares()["server"] * 100
                m[f"server_us_per_stream@{label}"] = window.server / max(len(stamps), 1) * 1e6
                m[f"held@{label}"] = swarm.live()
                if swarm.accepted < target:
                    bench.note(f"{c.name}: stopped at {swarm.accepted} idle streams of {target} "
                               f"({_failures(swarm)})")
                    break
        # The whole ramp without the pauses at the checkpoints (settling, reading memory).
        m["accept_rate"] = opened / ramp_seconds if ramp_seconds else float("nan")
        last_rate = m.get(f"rate@{marks[-1][1]}", float("nan"))
        m["flatness"] = last_rate / first_rate if len(marks) > 1 else 1.0
    finally:
        swarm.close()
    return m


async def memory_probe(bench: Bench, count: int) -> dict[str, Any]:
    """Idle streams on the gateway under tracemalloc: the growth per stream, by source."""
    out = bench.workdir / "memprobe.json"
    out.unlink(missing_ok=True)
    with Gateway(bench.workdir, memprobe=out) as c:
        pid = c.server_pids()[0]
        await bench.call(publish.setup, c.target, [f"idle{i}" for i in range(_WARM + count)],
                         running=False)
        swarm = Swarm(c.ports)
        try:
            await _open(bench, swarm, c, _WARM, "idle")
            await settle([pid])
            before = rss_bytes(pid)
            os.kill(pid, signal.SIGUSR1)  # baseline snapshot
            await settle([pid])
            await _open(bench, swarm, c, count, "idle")
            await settle([pid])
            grown, held = rss_bytes(pid) - before, swarm.live() - _WARM
            os.kill(pid, signal.SIGUSR2)  # growth since the baseline, written to `out`
            await swarm.until(out.exists, within=60.0, poll=0.1)
        finally:
            swarm.close()
    growth = json.loads(out.read_text())
    return {"streams": held, "rss_kib": grown / held / 1024,
            "traced_kib": growth["total"] / held / 1024,
            "files": [(g["where"], g["bytes"] / held) for g in growth["files"]],
            "lines": [(g["where"], g["bytes"] / held, g["count"] / held)
                      for g in growth["lines"]]}


def _rss(pids: list[int]) -> int:
    return sum(rss_bytes(p) for p in pids)


def _failures(swarm: Swarm) -> str:
    return ", ".join(f"{k}: {v}" for k, v in swarm.failures.items()) or "no failures"


# -- 5. heartbeats --------------------------------------------------------------------


async def heartbeat(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """CPU of a server holding 10,000 idle streams with its default heartbeat.

    One round of ``heartbeat_windows`` windows, each one heartbeat period long: the mean
    is the CPU share of holding the streams, heartbeats included.
    """
    plan = bench.plan
    period = plan.heartbeat_seconds or 15.0
    with make() as c:
        count = min(plan.heartbeat_streams, _stream_cap(bench, c))
        if count < plan.heartbeat_streams:
            bench.note(f"{c.name}: heartbeats measured at {count} streams, the most its "
                       f"descriptors allow (not {plan.heartbeat_streams})")
        await bench.call(publish.setup, c.target, [f"hb{i}" for i in range(count)],
                         running=False)
        swarm = Swarm(c.ports)
        try:
            await _open(bench, swarm, c, count, "hb")
            await settle(c.server_pids())
            shares: list[float] = []
            received = swarm.bytes
            with bench.profiling(c, "heartbeat"):
                for _ in range(plan.heartbeat_windows):
                    window = CpuWindow(c.server_pids()).start()
                    await asyncio.sleep(period)
                    shares.append(window.stop().shares()["server"] * 100)
            per_stream = (swarm.bytes - received) / max(swarm.live(), 1) / plan.heartbeat_windows
        finally:
            swarm.close()
    return [{"cpu_pct": sum(shares) / len(shares), "streams": swarm.accepted,
             "bytes_per_stream_per_period": per_stream}]


# -- 2. fan-out -----------------------------------------------------------------------


async def fanout(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """1,000 watchers of one job; publish -> last receipt over 20+ updates per round."""
    plan = bench.plan
    out = []
    with make() as c:
        await bench.call(publish.setup, c.target, ["fan"], running=True)
        swarm = Swarm(c.ports, markers=True)
        try:
            await swarm.open(plan.fanout_watchers, lambda i: c.stream_path("fan"),
                             concurrency=plan.open_concurrency, within=plan.open_timeout)
            await settle(c.server_pids())
            k = 0
            # A profiled round needs more than a second of samples.
            updates = plan.fanout_updates * (16 if bench.profile_dir else 1)
            for r in range(rounds + 1):  # round 0 warms up
                last, first, spread, missing = [], [], [], 0
                window = CpuWindow(c.server_pids(), c.backend_pids()).start()
                with bench.profiling(c, "fanout") if r == 1 else contextlib.nullcontext():
                    for _ in range(updates if r else plan.fanout_updates):
                        k += 1
                        t0 = await bench.call(publish.update, c.target, "fan", k)
                        live = swarm.live()
                        await swarm.until(_all_got(swarm, k, live), within=5.0)
                        missing += live - swarm.marker_count.get(k, 0)
                        if k in swarm.marker_last_ns:
                            last.append((swarm.marker_last_ns[k] - t0) / 1e6)
                            first.append((swarm.marker_first_ns[k] - t0) / 1e6)
                            # The fan-out itself, without the way in (worker, Redis, or
                            # nchan's POST): first copy out to last.
                            spread.append(last[-1] - first[-1])
                        await asyncio.sleep(0.02)
                window.stop()
                if r:
                    out.append({"last_p50_ms": percentile(last, 50),
                                "last_p99_ms": percentile(last, 99),
                                "first_p50_ms": percentile(first, 50),
                                "spread_p50_ms": percentile(spread, 50),
                                "watchers": swarm.live(), "missing": missing,
                                "client_cpu": window.shares()["client"] * 100})
        finally:
            swarm.close()
    return out


def _all_got(swarm: Swarm, k: int, streams: int) -> Callable[[], bool]:
    """Whether ``streams`` streams have received update ``k``."""
    return lambda: swarm.marker_count.get(k, 0) >= streams


# -- 3. throughput --------------------------------------------------------------------


async def throughput(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """1,000 jobs x 1 watcher, 100,000 updates: delivered events/s, CPU per event."""
    plan = bench.plan
    jobs = [f"tp{i}" for i in range(plan.throughput_jobs)]
    per_job = plan.throughput_updates // len(jobs)
    out = []
    with make() as c:
        await bench.call(publish.setup, c.target, jobs, running=True)
        swarm = Swarm(c.ports)
        try:
            await swarm.open(len(jobs), lambda i: c.stream_path(jobs[i]),
                             concurrency=plan.open_concurrency, within=plan.open_timeout)
            await settle(c.server_pids())
            first = 1
            for r in range(rounds):
                with bench.profiling(c, "throughput") if r == 0 else contextlib.nullcontext():
                    out.append(await _burst(bench, c, swarm, jobs, per_job, first))
                first += per_job
                await settle(c.server_pids())
        finally:
            swarm.close()
    return out


async def _burst(bench: Bench, c: Contender, swarm: Swarm, jobs: list[str], per_job: int,
                 first: int) -> Metrics:
    expected = swarm.events + per_job * swarm.live()
    before = swarm.events
    window = CpuWindow(c.server_pids(), c.backend_pids()).start()
    sent = asyncio.ensure_future(bench.call(publish.burst, c.target, jobs, per_job, first))
    try:
        # Until every event arrived, or nothing arrived for 5 s once publishing ended
        # (a server may fold a slow client's updates together: README, Event streams).
        deadline = asyncio.get_running_loop().time() + bench.plan.drain_timeout
        seen, quiet_since = swarm.events, asyncio.get_running_loop().time()
        while swarm.events < expected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            now = asyncio.get_running_loop().time()
            if swarm.events != seen:
                seen, quiet_since = swarm.events, now
            elif sent.done() and now - quiet_since > 5.0:
                break
        window.stop()
        t0, t1, accepted = await asyncio.wait_for(sent, bench.plan.drain_timeout)
    finally:
        if not sent.done():
            sent.cancel()
    delivered = swarm.events - before
    if delivered < expected - before:
        bench.note(f"{c.name}: throughput delivered {delivered} of {expected - before} events "
                   f"within the bound")
    seconds = (swarm.last_ns - t0) / 1e9
    m = {"events_per_s": delivered / seconds if seconds > 0 else float("nan"),
         "cpu_us_per_event": window.server / max(delivered, 1) * 1e6,
         "publish_per_s": accepted / ((t1 - t0) / 1e9), "delivered": delivered,
         "server_cpu": window.shares()["server"] * 100,
         "client_cpu": window.shares()["client"] * 100}
    if c.backend_pids():
        m[f"{c.backend_name}_cpu_us_per_event"] = window.backend / max(delivered, 1) * 1e6
        m[f"{c.backend_name}_cpu"] = window.shares()["backend"] * 100
    return m


# -- 4. latency -----------------------------------------------------------------------


async def latency(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """One watcher, updates at 100/s: worker call (or POST) -> client receipt."""
    plan = bench.plan
    out = []
    with make() as c:
        await bench.call(publish.setup, c.target, ["lat"], running=True)
        swarm = Swarm(c.ports, markers=True)
        try:
            await swarm.open(1, lambda i: c.stream_path("lat"), within=plan.open_timeout)
            first = 1
            for r in range(rounds + 1):  # round 0 warms up (50 updates)
                count = plan.latency_updates if r else 50
                with bench.profiling(c, "latency") if r == 1 else contextlib.nullcontext():
                    stamps = await bench.call(publish.paced, c.target, "lat", first, count,
                                              plan.latency_rate)
                last = first + count - 1
                await swarm.until(_all_got(swarm, last, 1), within=5.0)
                lat = [(swarm.marker_first_ns[k] - t0) / 1e6
                       for k, t0 in zip(range(first, last + 1), stamps, strict=True)
                       if k in swarm.marker_first_ns]
                if r:
                    out.append({"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                                "max_ms": max(lat, default=float("nan")),
                                "missing": count - len(lat)})
                first = last + 1
        finally:
            swarm.close()
    return out


# -- 6. JSON snapshots ----------------------------------------------------------------

_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")


async def json_snapshots(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """GET of the snapshot, cold and with If-None-Match (304), with wrk."""
    out = []
    with make() as c:
        variants: dict[str, dict[str, str]]
        if c.target.kind != "redis":
            await bench.call(publish.setup, c.target, ["json"], running=True)
            # nchan has no ETag/304 equivalent: n/a. Pushpin proxies the GET to its GRIP
            # backend, which answers the snapshot (and would have to do the 304 itself).
            variants = {"cold_rps": {}}
        else:
            await bench.call(publish.create_job, c.target.address, "json")
            # The tag the server gives (its form is the server's: a version, a position).
            etag = await asyncio.to_thread(_etag, c.ports[0], c.json_path("json"))
            variants = {"cold_rps": {}, "etag_rps": {"If-None-Match": etag}}
        path = c.json_path("json")
        for r in range(rounds + 1):  # round 0 warms up
            m: Metrics = {}
            for name, headers in variants.items():
                window = CpuWindow(c.server_pids(), c.backend_pids()).start()
                with bench.profiling(c, f"json-{name}") if r == 1 else contextlib.nullcontext():
                    rps = await _load(bench, c.ports[0], path, headers)
                window.stop()
                m[name] = rps
                m[name.replace("rps", "cpu_pct")] = window.shares()["server"] * 100
                if c.backend_pids():
                    m[name.replace("rps", f"{c.backend_name}_cpu_pct")] = (
                        window.shares()["backend"] * 100)
            if r:
                out.append(m)
    return out


def _etag(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        etag = response.getheader("ETag")
    finally:
        connection.close()
    if not etag:
        raise RuntimeError(f"GET {path} answered without an ETag")
    return etag


def _status(port: int, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def _load(bench: Bench, port: int, path: str, headers: dict[str, str]) -> float:
    plan = bench.plan
    wanted = 304 if "If-None-Match" in headers else 200
    status = await asyncio.to_thread(_status, port, path, headers)
    if status != wanted:
        raise RuntimeError(f"GET {path} {headers} answered {status}, not {wanted}")
    seconds = plan.json_seconds
    if bench.wrk is None:
        rps, _ = await http_load(port, path, headers, connections=plan.json_connections,
                                        seconds=seconds)
        return rps
    argv = [bench.wrk, "-t1", f"-c{plan.json_connections}", f"-d{max(1, round(seconds))}s",
            *[a for k, v in headers.items() for a in ("-H", f"{k}: {v}")],
            f"http://127.0.0.1:{port}{path}"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode(errors="replace")
    if "Non-2xx or 3xx" in text:
        raise RuntimeError(f"wrk saw errors on {path}:\n{text}")
    found = _RPS.search(text)
    if not found:
        raise RuntimeError(f"wrk printed no rate:\n{text}")
    return float(found[1])


# -- 7. burst -------------------------------------------------------------------------


async def burst(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """300 watchers of one job, 3,000 of its updates as fast as they can be published:
    what got through, what was skipped, and /healthz latency on the same server meanwhile.

    Intermediate progress may be skipped by design (a server may fold a job's pending
    updates together for a slow client); the last update must reach every watcher.
    """
    plan = bench.plan
    out = []
    with make() as c:
        await bench.call(publish.setup, c.target, ["burst"], running=True)
        swarm = Swarm(c.ports, markers=True)
        try:
            await swarm.open(plan.burst_watchers, lambda i: c.stream_path("burst"),
                             concurrency=plan.open_concurrency, within=plan.open_timeout)
            if swarm.live() < plan.burst_watchers:
                bench.note(f"{c.name}: burst with {swarm.live()} watchers of "
                           f"{plan.burst_watchers} ({_failures(swarm)})")
            await settle(c.server_pids())
            first = 1
            for r in range(rounds + 1):  # round 0 warms up (a tenth of the updates)
                count = plan.burst_updates if r else max(plan.burst_updates // 10, 1)
                with bench.profiling(c, "burst") if r == 1 else contextlib.nullcontext():
                    m = await _one_burst(bench, c, swarm, first, count)
                if r:
                    out.append(m)
                first += count
                await settle(c.server_pids())
        finally:
            swarm.close()
    return out


async def _one_burst(bench: Bench, c: Contender, swarm: Swarm, first: int,
                     count: int) -> Metrics:
    """Updates ``first`` .. ``first + count - 1`` of the job in one pipelined burst, with
    the /healthz probe running from just before it until every watcher got the last one
    (or the plan's drain timeout, or 5 s without any event once publishing ended)."""
    loop = asyncio.get_running_loop()
    last = first + count - 1
    watchers = swarm.live()
    probe = Probe(c.ports[0], every=bench.plan.burst_probe_every)
    try:
        await probe.connect()
        window = CpuWindow(c.server_pids(), c.backend_pids()).start()
        probe.start()
        sent = asyncio.ensure_future(bench.call(publish.burst, c.target, ["burst"], count,
                                                first))
        try:
            deadline = loop.time() + bench.plan.drain_timeout
            seen, quiet_since = swarm.events, loop.time()
            while swarm.marker_count.get(last, 0) < watchers and loop.time() < deadline:
                await asyncio.sleep(0.005)
                now = loop.time()
                if swarm.events != seen:
                    seen, quiet_since = swarm.events, now
                elif sent.done() and (now - quiet_since > 5.0 or sent.exception()):
                    break
            window.stop()
            latencies = await probe.stop()
            t0, t1, accepted = await asyncio.wait_for(sent, bench.plan.drain_timeout)
        finally:
            if not sent.done():
                sent.cancel()
    finally:
        probe.close()
    ks = range(first, last + 1)
    delivered = sum(swarm.marker_count.get(k, 0) for k in ks)
    received_ns = max((swarm.marker_last_ns.get(k, 0) for k in ks), default=0)
    missing = max(watchers - swarm.marker_count.get(last, 0), 0)
    if missing:
        bench.note(f"{c.name}: burst: {missing} of {watchers} watchers did not get the last "
                   f"update within the bound")
    if accepted < count:
        bench.note(f"{c.name}: burst: the server took {accepted} of {count} updates")
    if probe.unanswered:
        bench.note(f"{c.name}: burst: a /healthz request was still unanswered at the end of "
                   f"the burst (counted with its age)")
    seconds = (received_ns - t0) / 1e9
    m = {"updates_per_s": accepted / ((t1 - t0) / 1e9) if t1 > t0 else float("nan"),
         "events_per_s": delivered / seconds if delivered and seconds > 0 else float("nan"),
         "conflated": (1 - delivered / watchers / accepted if watchers and accepted
                       else float("nan")),
         "missing": missing, "watchers": watchers, "published": accepted,
         "healthz_p50_ms": percentile(latencies, 50),
         "healthz_p99_ms": percentile(latencies, 99),
         "healthz_max_ms": max(latencies, default=float("nan")),
         "healthz_requests": len(latencies),
         "cpu_s": window.server,
         "server_cpu": window.shares()["server"] * 100,
         "client_cpu": window.shares()["client"] * 100}
    if c.backend_pids():
        m[f"{c.backend_name}_cpu_s"] = window.backend
    return m


SCENARIOS: dict[str, Scenario] = {
    "idle": idle,
    "heartbeat": heartbeat,
    "fanout": fanout,
    "throughput": throughput,
    "latency": latency,
    "json": json_snapshots,
    "burst": burst,
    "dashboard": dashboard,
    "scale": scale,
}
