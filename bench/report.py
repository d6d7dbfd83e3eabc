"""Results: medians per contender, the goals, RESULTS.md and results.json."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import scale
from bench.measure import Profile, median

COLUMNS = ("gateway", "naive", "nchan", "pushpin", "floor")
BASELINE = "baseline"  # the gateway of an earlier build (--baseline REF), when one ran


@dataclass(frozen=True)
class Goal:
    text: str
    op: str  # "<=" or ">="
    bound: float
    peer: str | None = None  # None: an absolute bound on the gateway's value

    def check(self, value: float, peers: dict[str, float]) -> tuple[float | None, bool | None]:
        """(the compared number, met?) or None where it cannot be judged."""
        if self.peer is not None:
            base = peers.get(self.peer, math.nan)
            if not (base == base and value == value) or base == 0:
                return None, None
            value = value / base
        if value != value:
            return None, None
        return value, value <= self.bound if self.op == "<=" else value >= self.bound


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str  # key in a round's metrics; "name@label" keys give one row per label
    label: str
    unit: str
    goal: Goal | None = None


ROWS = [
    Row("idle", "mem_kib", "memory per idle stream (server RSS delta / streams)", "KiB",
        Goal("≤ 1.0x nchan", "<=", 1.0, "nchan")),
    Row("idle", "redis_kib", "Redis memory per idle stream", "KiB"),
    # Pushpin's GRIP backend (bench/grip_backend.py), not counted in pushpin's column.
    Row("idle", "grip_kib", "pushpin's GRIP backend: memory per idle stream (apart)", "KiB"),
    Row("idle", "grip_rss_mib", "pushpin's GRIP backend: resident memory (apart)", "MiB"),
    Row("idle", "grip_cpu", "pushpin's GRIP backend: CPU while streams open (% of a core)",
        "%"),
    Row("idle", "rate", "new streams accepted/s", "/s", Goal("≥ 0.6x nchan", ">=", 0.6, "nchan")),
    Row("idle", "accept_rate", "new streams accepted/s, whole ramp", "/s",
        Goal("≥ 0.6x nchan", ">=", 0.6, "nchan")),
    Row("idle", "accept_rate", "new streams accepted/s, whole ramp (against the floor)", "/s",
        Goal("≥ 0.85x floor", ">=", 0.85, "floor")),
    Row("idle", "flatness", "accept rate, last segment / first (flat = 1)", "x",
        Goal("≥ 0.8 (flat)", ">=", 0.8)),
    Row("idle", "held", "streams held", ""),
    Row("fanout", "last_p50_ms", "publish → last receipt p50", "ms",
        Goal("≤ 1.0x nchan", "<=", 1.0, "nchan")),
    Row("fanout", "last_p99_ms", "publish → last receipt p99", "ms"),
    Row("fanout", "first_p50_ms", "publish → first receipt p50", "ms"),
    Row("fanout", "spread_p50_ms", "first → last receipt p50 (the fan-out itself)", "ms"),
    Row("throughput", "events_per_s", "delivered events/s", "/s"),
    Row("throughput", "cpu_us_per_event", "server CPU per delivered event", "µs",
        Goal("≤ 1.0x nchan", "<=", 1.0, "nchan")),
    Row("throughput", "redis_cpu_us_per_event", "Redis CPU per delivered event", "µs"),
    Row("latency", "p50_ms", "update → client receipt p50", "ms", Goal("≤ 1 ms", "<=", 1.0)),
    Row("latency", "p99_ms", "update → client receipt p99", "ms", Goal("≤ 5 ms", "<=", 5.0)),
    Row("heartbeat", "cpu_pct", "server CPU holding idle streams (% of a core)", "%",
        Goal("≤ 2 %", "<=", 2.0)),
    Row("heartbeat", "streams", "idle streams held", ""),
    Row("json", "cold_rps", "snapshot GET req/s", "/s", Goal("≥ 3x naive", ">=", 3.0, "naive")),
    Row("json", "etag_rps", "snapshot GET with If-None-Match (304) req/s", "/s",
        Goal("≥ 3x naive", ">=", 3.0, "naive")),
    Row("json", "cold_grip_cpu_pct", "pushpin's GRIP backend: CPU answering the GETs (% of a "
        "core)", "%"),
    Row("burst", "updates_per_s", "updates of one job published/s (pipelined)", "/s"),
    Row("burst", "events_per_s", "events received/s, all watchers (first publish → last "
        "receipt)", "/s"),
    Row("burst", "conflated", "share of updates a watcher never got (1 - events per "
        "watcher / updates)", ""),
    Row("burst", "healthz_p50_ms", "GET /healthz during the burst p50", "ms"),
    Row("burst", "healthz_p99_ms", "GET /healthz during the burst p99", "ms"),
    Row("burst", "healthz_max_ms", "GET /healthz during the burst max", "ms"),
    Row("burst", "cpu_s", "server CPU over the burst", "s"),
    # The page at / (bench/dashboard.py): the gateway only, as no other contender has one.
    Row("dashboard", "frame_p50_ms", "frame interval under load p50 (500 jobs, 200 updates/s)",
        "ms"),
    Row("dashboard", "frame_p99_ms", "frame interval under load p99", "ms",
        Goal("≤ 50 ms", "<=", 50.0)),
    Row("dashboard", "idle_frame_p50_ms", "frame interval idle p50 (the same page, no updates)",
        "ms"),
    Row("dashboard", "idle_frame_p99_ms", "frame interval idle p99", "ms"),
    Row("dashboard", "frame_p99_ratio", "frame interval p99, loaded / idle", "x"),
    Row("dashboard", "longtasks_per_10s", "long tasks (over 50 ms) under load, per 10 s", ""),
    Row("dashboard", "longtask_ms_per_10s", "time in long tasks under load, per 10 s", "ms"),
    Row("dashboard", "latency_p50_ms", "update → drawn on the page p50", "ms"),
    Row("dashboard", "latency_p99_ms", "update → drawn on the page p99", "ms",
        Goal("≤ 250 ms", "<=", 250.0)),
    Row("dashboard", "missing_final", "share of jobs whose last update never showed", "",
        Goal("0", "<=", 0.0)),
    Row("dashboard", "publish_per_s", "updates published/s (paced at 200)", "/s"),
    Row("dashboard", "server_cpu", "gateway CPU under load (% of a core)", "%"),
    Row("dashboard", "browser_cpu", "chromium CPU under load, all its processes (% of a core)",
        "%"),
    Row("dashboard", "renderer_cpu", "of which its renderer, the page's process (% of a core)",
        "%"),
    # Processes x backends (bench/scale.py): the gateway only, each configuration a row.
    Row("scale", "events_per_s", "delivered events/s, publisher as fast as it goes", "/s"),
    Row("scale", "x2_over_x1", "delivered events/s, 2 processes / 1 (same round)", "x"),
]

def fmt(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _labels(rounds: dict[str, list[dict[str, float]]], metric: str) -> list[str]:
    """The labels of ``metric@label`` keys in the order they were measured."""
    seen: list[str] = []
    for per_round in rounds.values():
        for m in per_round:
            for key in m:
                name, _, label = key.partition("@")
                if name == metric and label and label not in seen:
                    seen.append(label)
    return seen


def _count(label: str) -> str:
    return "fd limit" if label == "max" else f"{int(label):,}"


def summary(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict[str, Any]]:
    """One row per scenario metric: the median per contender, the ratio, the goal.

    Where a baseline ran (in any scenario), every row has its median and the ratio
    ``gateway_over_baseline`` too (NaN where there is none); otherwise neither key."""
    with_baseline = any(BASELINE in rounds for rounds in results.values())
    out: list[dict[str, Any]] = []
    for row in ROWS:
        rounds = results.get(row.scenario)
        if not rounds:
            continue
        labels = _labels(rounds, row.metric) or [""]
        for i, label in enumerate(labels):
            key = f"{row.metric}@{label}" if label else row.metric
            text = row.label
            if label and row.metric == "rate":
                prev = _count(labels[i - 1]) if i else "0"
                text += f", streams {prev}-{_count(label)}"
            elif label == "max":
                text += ", at the fd limit"
            elif label in scale.LABELS:
                text += f", {scale.LABELS[label]}"
            elif label:
                text += f", at {_count(label)} streams"
            variants = [("gateway", "")]
            if "gateway x2" in rounds:
                variants.append(("gateway x2", " (2 gateway processes)"))
            for gateway_name, suffix in variants:
                values = {col: median([m[key] for m in rounds.get(col, []) if key in m])
                          for col in COLUMNS}
                values["gateway"] = median([m[key] for m in rounds.get(gateway_name, [])
                                            if key in m])
                if all(v != v for v in values.values()):
                    continue
                nchan, floor = values["nchan"], values["floor"]
                ratio = values["gateway"] / nchan if nchan == nchan and nchan else math.nan
                pushpin = values["pushpin"]
                over_pushpin = (values["gateway"] / pushpin if pushpin == pushpin and pushpin
                                else math.nan)
                # The floor (bench/floor_app.py): what the gateway adds to its server stack.
                over_floor = values["gateway"] / floor if floor == floor and floor else math.nan
                versus: dict[str, float] = {}
                if with_baseline:
                    # Only the one-process gateway has a baseline to compare with.
                    base = (median([m[key] for m in rounds.get(BASELINE, []) if key in m])
                            if gateway_name == "gateway" else math.nan)
                    versus = {BASELINE: base, "gateway_over_baseline":
                              values["gateway"] / base if base == base and base else math.nan}
                compared, met = (row.goal.check(values["gateway"], values)
                                 if row.goal else (None, None))
                out.append({"scenario": row.scenario, "metric": key, "label": text + suffix,
                            "unit": row.unit, **values, "gateway_over_nchan": ratio,
                            "gateway_over_pushpin": over_pushpin,
                            "gateway_over_floor": over_floor, **versus,
                            "goal": row.goal.text if row.goal else "",
                            "compared": compared, "met": met,
                            "rounds": {c: len(rounds.get(c, [])) for c in rounds}})
    return out


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"


def table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table; with the baseline's two columns after the gateway's
    where a baseline ran, and pushpin's two then the floor's two after nchan's where they
    ran."""
    with_baseline = any(BASELINE in r for r in rows)
    with_floor = any(r.get("floor", math.nan) == r.get("floor", math.nan) for r in rows)
    with_pushpin = any(r.get("pushpin", math.nan) == r.get("pushpin", math.nan) for r in rows)
    base_head, base_rule = ("baseline | gateway/baseline | ", "---: | ---: | ") if (
        with_baseline) else ("", "")
    floor_head, floor_rule = ("floor | gateway/floor | ", "---: | ---: | ") if (
        with_floor) else ("", "")
    if with_pushpin:
        floor_head, floor_rule = "pushpin | gateway/pushpin | " + floor_head, (
            "---: | ---: | " + floor_rule)
    lines = [f"| scenario | metric | gateway | {base_head}naive | nchan | gateway/nchan | "
             f"{floor_head}goal | met? |",
             f"| --- | --- | ---: | {base_rule}---: | ---: | ---: | {floor_rule}--- | --- |"]
    for r in rows:
        unit = f" ({r['unit']})" if r["unit"] else ""
        goal = r["goal"]
        if goal and r["compared"] is not None and "x" in goal and "nchan" not in goal:
            goal += f" (is {r['compared']:.2f}x)"
        met = {True: "yes", False: "**no**", None: "-" if not goal else "n/a"}[r["met"]]
        base = (f"{fmt(r.get(BASELINE))} | {_ratio(r.get('gateway_over_baseline', math.nan))} | "
                if with_baseline else "")
        floor = (f"{fmt(r.get('floor'))} | {_ratio(r.get('gateway_over_floor', math.nan))} | "
                 if with_floor else "")
        if with_pushpin:
            floor = (f"{fmt(r.get('pushpin'))} | "
                     f"{_ratio(r.get('gateway_over_pushpin', math.nan))} | {floor}")
        lines.append(f"| {r['scenario']} | {r['label']}{unit} | {fmt(r['gateway'])} | {base}"
                     f"{fmt(r['naive'])} | {fmt(r['nchan'])} | "
                     f"{_ratio(r['gateway_over_nchan'])} | {floor}{goal} | {met} |")
    return "\n".join(lines)


def profile_text(name: str, profile: Profile, path: str) -> str:
    if not profile.samples:
        return f"- `{name}`: py-spy recorded no samples ({path})."
    lines = [f"Profile of the gateway during `{name}` (py-spy --native, {profile.rate} Hz, "
             f"{profile.seconds:.0f} s, {profile.samples:,} samples, on a CPU "
             f"{profile.busy:.0%} of the time; raw stacks: `{path}`).", "",
             "Own time (the frame itself), and for C frames the Python function that ran "
             "them:", ""]
    for frame, share in profile.self_time[:8]:
        lines.append(f"    {share:6.1%}  {frame}")
        for caller, part in profile.callers.get(frame, []):
            lines.append(f"              {part:6.1%}  from {caller}")
    lines += ["", "Inclusive time of Python functions (a function that only wraps another "
              "is left out):", ""]
    lines += [f"    {share:6.1%}  {frame}" for frame, share in profile.inclusive[:12]]
    return "\n".join(lines)


METHOD = """\
- **idle**: streams open 100 at a time (one job per stream; each opens with the job's
  current snapshot, which for nchan is its last stored message); memory = growth of the
  server's resident set (nchan: its one worker; pushpin: all its processes) from 100 open
  streams to the count, divided by the streams added, once the server is quiet. Accept
  rate = streams whose first event arrived per second (kernel receive timestamps), per
  segment of the ramp. A fresh server per round. "Flat" is read as the last segment's
  rate at least 0.8x the first's.
- **fanout**: 1,000 streams on one job; per update, the publisher's clock just before the
  worker call (nchan: the POST) to the kernel receive time of the last (and first) of the
  1,000 copies; the next update goes once all copies arrived. 25 updates per round, after a
  warm-up round. "First → last receipt" is the fan-out itself, without the way in (the
  worker's call and Redis, or nchan's POST). Each round's figures are listed under
  "Round by round", with their range.
- **throughput**: 1,000 jobs with one stream each; 100,000 updates round robin (so that no
  update can be folded into another), pipelined 200 at a time (worker EVALSHA calls;
  nchan: pipelined POSTs). Events/s = delivered events / (first publish → last receipt);
  CPU per event = the server's user+system CPU over the burst / delivered events (Redis
  shown apart). Two gateway processes share one Redis, 500 streams each.
- **latency**: one stream; updates at 100/s from a worker (`SyncWorker.progress`; nchan:
  an HTTP POST); publisher clock before the call → kernel receive time.
- **heartbeat**: CPU share of the server process over windows of one heartbeat period
  while it holds the idle streams (default heartbeat: 15 s everywhere; nchan's
  `nchan_eventsource_ping_interval` set to the same).
- **json**: wrk, 1 thread, 32 connections, on `GET /v1/jobs/{id}` (nchan: a long-poll GET
  of the channel, answered at once with the stored message; it has no 304), without and
  with `If-None-Match` of the current version.
- **burst**: 300 streams on one job; 3,000 progress updates of it published as fast as
  the publisher can (the throughput scenario's pipelined burst, 200 at a time; nchan:
  pipelined POSTs), after a warm-up burst of 300. Updates/s = published / publish time;
  events/s = update events received by all streams / (first publish → kernel receive
  time of the last); conflated = 1 - events per stream / updates (a server may skip
  intermediate progress for a busy client; every stream must get the last update, counted
  as `missing` in results.json where one did not). Meanwhile a probe on one more
  keep-alive connection sends `GET /healthz` every 5 ms (or as soon as the previous answer
  came, when that took longer), from just before the burst until every stream got the last
  update; each request's latency is the probe's clock just before `send()` → kernel
  receive time of the answer's end. CPU = the server's user+system seconds over the same
  span (Redis apart). The goal, bounded /healthz latency during a burst, has no number to
  check against.
- **dashboard** (the gateway only: no other contender has a page): the page at `/` in
  Debian's chromium, headless, driven by Playwright (a fresh browser context per round,
  viewport 1280x900), with 500 jobs of one tenant, half of them running, once its table
  shows all 500 rows. Through Playwright's `evaluate` the bench installs in the page a
  `requestAnimationFrame` loop (frame interval = between successive frames' start times),
  a `PerformanceObserver` of `longtask` entries (main-thread tasks over 50 ms) and a
  `MutationObserver` on the table's body that notes, with `Date.now()`, when each
  update's marker (its phase, `b<k>`, in the row's "<pct>% · <phase>") first shows: the
  frame in which the page drew it, before that frame's layout and paint. After 1 s of
  updates as a warm-up: an idle window of 3 s (no updates), then the loaded window, 10 s
  of updates paced at 200/s round robin over the 250 running jobs (`SyncWorker.progress`
  from the publisher process, each stamped with its clock just before the call, the
  same clock as the page's). Latency = that stamp → drawn, over the updates drawn; the
  page keeps a job's latest snapshot per frame and may skip an update when a later one of
  the job comes first, so only each job's last update must show (within 5 s of the last
  call; else counted in `missing_final`). Long tasks per 10 s of the loaded window. CPU
  in % of a core over the loaded window: the gateway, chromium (all its processes, and
  apart its renderer, which runs the page: script, style, layout, paint), and in
  results.json Redis, Playwright's driver (Playwright turns on the DevTools protocol's
  network events, so the stream's traffic reaches it too), the publisher, and the same
  over the idle window (`idle_*`): all of them share the machine's cores.
- **scale** (the gateway only; `bench/scale.py`): one Valkey and a 3-primary Valkey Cluster
  on loopback, both with the same tenants (two per shard of the cluster, by the slot of
  their hash tag) and an API key each; 50 running jobs per tenant, 10 streams per job
  (`/v1/jobs/{id}` with a token of the tenant's key in `?access_token=`), stream `i` on
  gateway process `i % processes`, so that each process watches every job. Four
  configurations per round, each with fresh gateway processes: one Redis or the cluster,
  1 or 2 processes (in turn, reversed every other round). A publisher process
  (`gateway.worker.Worker`, asyncio, 8 calls in flight, one client for all tenants)
  reports progress round robin over all jobs as fast as it goes: 2 s of warm-up, then
  an 8 s window. Events/s = update events received by all streams in the window / its
  length; updates/s = worker calls that ended in the window (the publisher's 10 ms
  counts) / its length; folded = 1 - events received / (updates x streams of the job),
  over the whole run; CPU in % of one core over the window, and the whole machine's in
  % of all cores. 2 processes / 1 is the ratio of the two configurations' events/s
  within each round. The section "Scale" below has every configuration side by side,
  with the core count and what bounds the figure.
- **pushpin** (Debian's pushpin, condure, zurl) holds the streams; a GRIP backend
  (`bench/grip_backend.py`, one asyncio process) opens each with `Grip-Hold: stream`, its
  job's channel, a `Grip-Keep-Alive` as long as the others' heartbeat and the opening
  snapshot, and answers the JSON GET (proxied by pushpin: no 304). Updates are POSTs to
  `/publish/` of items carrying the whole SSE frame (bursts: 200 items per POST, as it
  closes the connection after each answer). Memory and CPU: all pushpin processes summed
  (runner, condure, proxy, handler, zurl); the backend's are apart (`pushpin's GRIP
  backend` rows). Its rate limiter is off (in 1.36 it delivers nothing while publishes
  come less than 25 ms apart: `bench/pushpin.py`); a stream then queues 100 updates it
  cannot write yet and drops newer ones, so a burst that outruns a watcher loses the last
  (`missing`). A handler that falls behind makes the proxy refuse new streams (`500
  Accept service unavailable.`): the idle ramp stops there, `http 500` in the notes.
- Every server runs with its defaults (the gateway and the naive app log each request, as
  they do out of the box; nginx writes its access log). Logs go to files.
- Where a goal is not met, one more round of the gateway runs under `py-spy record
  --native` (and, for memory, under tracemalloc), and a what-if round measures the
  gateway with one thing changed (`bench/whatif.py`); none of these are in the medians.
"""


# Per round, where the round-to-round range matters (a fan-out figure that
# moved between runs): scenario -> the metrics listed round by round.
BY_ROUND = {"fanout": ("last_p50_ms", "last_p99_ms", "spread_p50_ms")}


def by_round(scenarios: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    """Each round's value per contender, and the range, for the metrics of BY_ROUND."""
    lines: list[str] = []
    for scenario, metrics in BY_ROUND.items():
        per_contender = scenarios.get(scenario)
        if not per_contender:
            continue
        labels = {r.metric: r.label for r in ROWS if r.scenario == scenario}
        lines += [f"### {scenario}, round by round", "",
                  "| contender | metric | rounds (ms) | range (max / min) |",
                  "| --- | --- | --- | ---: |"]
        for contender, rounds in per_contender.items():
            for metric in metrics:
                values = [m[metric] for m in rounds if metric in m]
                if not values:
                    continue
                spread = max(values) / min(values) if min(values) > 0 else math.nan
                lines.append(f"| {contender} | {labels.get(metric, metric)} | "
                             f"{', '.join(fmt(v) for v in values)} | {spread:.2f}x |")
        lines.append("")
    return lines


def render(meta: dict[str, Any], rows: list[dict[str, Any]], notes: list[str],
           unmet: list[str], scenarios: dict[str, Any] | None = None) -> str:
    everything = {r.scenario for r in ROWS}
    ran = "" if set(meta["ran"]) >= everything else " of " + ", ".join(meta["ran"])
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{meta['command']}` on {meta['finished']} ({meta['mode']} run{ran}, "
        f"{meta['elapsed_s']:.0f} s). Each number is the median of the rounds in "
        "`results.json` (rounds per contender there too); ratios are gateway / nchan (and "
        "gateway / pushpin, gateway / floor where they ran) in the same run. Regenerate with "
        "`scripts/bench`.",
        "",
        *([_baseline_text(meta["baseline"], list(meta.get("measured_at", {}))), ""]
          if meta.get("baseline") else []),
        *(["Scenarios measured at different times (a run of some scenarios keeps the "
           "others): " + ", ".join(
            f"{k} {v}" for k, v in meta["measured_at"].items()), ""]
          if len(set(meta.get("measured_at", {}).values())) > 1 else []),
        *(["Scenarios measured on different machines (compare ratios, not figures, across "
           "them): " + "; ".join(f"{k} on {v}" for k, v in meta["machines"].items()), ""]
          if len(set(meta.get("machines", {}).values())) > 1 else []),
        table(rows),
        "",
        "## Set-up",
        "",
    ]
    parts += [f"- {k}: {v}" for k, v in meta["machine"].items()]
    rounds = by_round(scenarios or {})
    if rounds:
        parts += ["", "## Round by round", "", *rounds]
    scaled = (scenarios or {}).get("scale", {}).get("gateway")
    if scaled:
        where = meta.get("machines", {}).get("scale", meta["machine"].get("machine", "?"))
        parts += ["", *scale.section(scaled, where, fmt)]
    parts += ["", "## How each number is measured", "", METHOD]
    if notes:
        parts += ["## Scale and notes", ""] + [f"- {n}" for n in notes] + [""]
    parts += ["## Goals not met: what bounds them", ""]
    parts += unmet or ["Every goal that this run could judge is met."]
    return "\n".join(parts).rstrip() + "\n"


def _baseline_text(builds: dict[str, str], scenarios: list[str]) -> str:
    """Which build the baseline column is (per scenario, where not the same in all)."""
    labels = list(dict.fromkeys(builds.values()))
    if len(labels) == 1 and set(builds) >= set(scenarios):
        which = f"the gateway of `{labels[0]}`"
    else:
        which = "the gateway of " + ", ".join(f"`{b}` in {s}" for s, b in builds.items())
    return (f"`baseline` is {which}, from a git worktree, started as the gateway is and "
            "measured just before it in each scenario of the same run; gateway/baseline is "
            "their ratio (for latency, CPU and memory below 1x is an improvement, for rates "
            "above).")


# A profile names the project's own files from this checkout's root.
_CHECKOUT = str(Path(__file__).resolve().parents[1]) + "/"


def _source(where: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", _CHECKOUT):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def memory_text(probe: dict[str, Any]) -> str:
    """The tracemalloc probe of idle streams (bench/memprobe.py) as a few lines."""
    lines = [f"Where the gateway's memory per idle stream goes: `bench/memprobe.py` runs the "
             f"same app under tracemalloc and opens {probe['streams']:,} idle streams (one "
             f"job each). Python allocations grew {probe['traced_kib']:.1f} KiB per stream "
             "(compare the resident-set growth in the table; tracing inflates the probe's "
             "own RSS, so that is not used). What C code such as uvloop allocates through "
             "Python's allocator shows up under the Python line that was running, often "
             "`asyncio/runners.py`. Growth per stream, by file:", ""]
    lines += [f"    {size / 1024:6.2f} KiB  {_source(where.rsplit(':', 1)[0])}"
              for where, size in probe["files"][:12]]
    lines += ["", "and by line (bytes and objects per stream):", ""]
    lines += [f"    {size:6.0f} B  {count:4.1f}  {_source(where)}"
              for where, size, count in probe["lines"][:15]]
    return "\n".join(lines)
