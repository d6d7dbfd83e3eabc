"""``python -m bench``: start the contenders on loopback, run the scenarios, write results.

    python -m bench                       # the full run (about 12 minutes on 2 cores)
    python -m bench --quick               # small counts, under 2 minutes: a smoke test
    python -m bench --scenarios fanout,latency --contenders gateway,nchan
    python -m bench --quick --baseline 2e99cdd   # this tree's gateway against that build

A full run writes bench/RESULTS.md and bench/results.json (a run of some scenarios
updates just those in them); a quick run writes bench/quick/.

``--baseline REF`` (any git ref or commit of this repository) compares the gateway with an
earlier build of itself in the same run, as ratios within one run are the only fair
comparison: REF is checked out into a detached ``git worktree`` in a temporary directory
(removed at the end, also on failure), and one more column, ``baseline``, runs that tree's
``python -m gateway serve`` exactly as the ``gateway`` column runs this tree's (same venv;
``cwd`` and ``PYTHONPATH`` point at the worktree, and the bench checks that the package is
imported from there). It runs in every scenario the gateway runs in, just before the
gateway so that drift affects both alike, but not in the ``gateway x2`` round, profiling
or what-if rounds. The table gains ``baseline`` and ``gateway/baseline`` columns. The
baseline column is implied by ``--baseline``: ``--contenders`` need not name it (it may,
as ``baseline``), but it must include ``gateway``. Only the server differs: Redis, the
load generator and the workers' side (the publisher's ``gateway.worker``) are this tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import report, whatif
from bench.baseline import Source, worktree
from bench.contenders import (
    Baseline,
    Contender,
    Floor,
    Gateway,
    Naive,
    Nchan,
    ensure_tools,
    fd_limit,
    nginx_binary,
)
from bench.measure import median, py_spy
from bench.plan import Bench, Plan
from bench.pushpin import Pushpin
from bench.pushpin import unavailable as pushpin_unavailable
from bench.readings import READINGS
from bench.scenarios import SCENARIOS, memory_probe

HERE = Path(__file__).parent
# Each column's class: what it serves (Contender.scenarios) decides where it runs. In the
# order they run: the gateway last, so that its profile round can follow; the baseline
# (--baseline) right before it, so that the two builds are measured back to back.
KINDS: dict[str, type[Contender]] = {"nchan": Nchan, "pushpin": Pushpin, "naive": Naive,
                                     "floor": Floor, "baseline": Baseline, "gateway": Gateway}
ORDER = tuple(KINDS)
CONTENDERS = ("nchan", "pushpin", "naive", "floor", "gateway")  # the default of --contenders
_CLIENT_RESERVE = 200


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmarks: the gateway, a naive Starlette app, nchan and pushpin.")
    parser.add_argument("--quick", action="store_true", help="small counts, under 2 minutes")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated subset of gateway,naive,nchan,pushpin,floor (with "
                             "--baseline, baseline is added; gateway must be in it); each "
                             "runs in the scenarios it serves (dashboard, scale: the gateway "
                             "only)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; quick 1)")
    parser.add_argument("--profile", choices=("unmet", "all", "none"),
                        help="py-spy round of the gateway for scenarios whose goal is unmet "
                             "(default for a full run), for every scenario, or none "
                             "(default for a quick run)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run the gateway of git ref REF (a temporary worktree) as "
                             "the column `baseline`, and show gateway/baseline")
    parser.add_argument("--out", type=Path, help="where RESULTS.md and results.json go")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write RESULTS.md again from results.json")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(args.scenarios) - set(SCENARIOS) | set(args.contenders) - set(ORDER)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    if args.baseline is not None:
        if args.render:
            parser.error("--render measures nothing: --baseline does not go with it")
        if "gateway" not in args.contenders:
            parser.error("--baseline compares with the gateway: --contenders must include "
                         "gateway")
        if "baseline" not in args.contenders:
            args.contenders.append("baseline")
    elif "baseline" in args.contenders:
        parser.error("the baseline contender needs --baseline REF")
    return args


def _factory(column: str, plan: Plan, workdir: Path, scenario: str,
             baseline: Source | None = None) -> Callable[[], Contender]:
    beat = plan.heartbeat_seconds if scenario == "heartbeat" else None
    if column == "gateway":
        return lambda: Gateway(workdir, heartbeat=beat)
    if column == "baseline":
        if baseline is None:
            raise ValueError("the baseline contender needs --baseline REF")
        source = baseline.path
        return lambda: Baseline(workdir, source, heartbeat=beat)
    if column == "naive":
        return lambda: Naive(workdir, heartbeat=beat)
    if column == "floor":
        return lambda: Floor(workdir, heartbeat=beat, hub=scenario == "fanout")
    if column == "pushpin":
        return lambda: Pushpin(workdir, heartbeat=beat)
    return lambda: Nchan(workdir, heartbeat=beat)


async def _measure(bench: Bench, scenario: str, make: Callable[[], Contender], rounds: int,
                   name: str, results: dict[str, Any]) -> None:
    started = time.monotonic()
    print(f"bench: {scenario} / {name} ...", file=sys.stderr, flush=True)
    bound = 120.0 if bench.plan.quick else 360.0
    try:
        results[name] = await asyncio.wait_for(SCENARIOS[scenario](bench, make, rounds), bound)
    except Exception as exc:  # one contender failing must not lose the others' results
        traceback.print_exc()
        bench.note(f"{scenario} / {name} failed: {type(exc).__name__}: {exc}".splitlines()[0])
        return
    print(f"bench: {scenario} / {name} done in {time.monotonic() - started:.0f}s: "
          f"{json.dumps(results[name], default=_round)}", file=sys.stderr, flush=True)


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else str(value)


def _machine(wrk: str | None) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (
            done.stdout or done.stderr).strip() else "?"

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    from gateway.embedded import server_binary

    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        "python": f"{platform.python_version()} (uvloop + httptools under uvicorn)",
        "redis": first_line([server_binary(), "--version"]),
        "nginx": first_line([nginx_binary() or "nginx", "-v"]),
        "nchan": first_line(["dpkg-query", "-W", "libnginx-mod-nchan"]),
        "pushpin": first_line(["dpkg-query", "-W", "-f", "${Package} ${Version}, ", "pushpin",
                               "condure", "zurl"]).rstrip(",") + "; GRIP backend: "
                   "bench/grip_backend.py",
        "load": first_line([wrk, "-v"]) if wrk else "wrk missing: bench.loadgen.http_load",
        "descriptors": f"hard limit {fd_limit():,} per process (bench and servers raise "
                       "their soft limit to it)",
    }


async def _run(args: argparse.Namespace, baseline: Source | None = None) -> int:
    started = time.monotonic()
    limit = fd_limit()
    plan = Plan.quick_plan() if args.quick else Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    profile_mode = args.profile or ("none" if args.quick else "unmet")
    out = args.out or (HERE / "quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)

    reasons = ensure_tools("nchan" in args.contenders, "json" in args.scenarios)
    notes: list[str] = []
    contenders = list(args.contenders)
    reason = pushpin_unavailable() if "pushpin" in contenders else None
    if reason:
        reasons["pushpin"] = reason
    for peer in ("nchan", "pushpin"):
        if peer in reasons and peer in contenders:
            contenders.remove(peer)
            notes.append(f"{peer} skipped: {reasons[peer]}")
            print(f"bench: {peer} skipped: {reasons[peer]}", file=sys.stderr)
    if "wrk" in reasons:
        notes.append(f"json: {reasons['wrk']}; the bench's own keep-alive loop measured it")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    bench = Bench(plan, workdir, pool, client_streams=limit - _CLIENT_RESERVE,
                  wrk=shutil.which("wrk"), notes=notes)
    results: dict[str, dict[str, Any]] = {}
    try:
        for scenario in args.scenarios:
            results[scenario] = {}
            for column in (c for c in ORDER if c in contenders):
                if scenario not in KINDS[column].scenarios:
                    continue  # e.g. the floor in fan-out; all but the gateway in dashboard
                make = _factory(column, plan, workdir, scenario, baseline)
                await _measure(bench, scenario, make, plan.rounds, column, results[scenario])
                if scenario == "throughput" and column == "gateway":
                    await _measure(bench, scenario, lambda: Gateway(workdir, processes=2),
                                   plan.rounds, "gateway x2", results[scenario])
        rows = report.summary(results)
        if profile_mode != "none" and "gateway" in contenders and py_spy():
            await _profile(bench, rows, results, profile_mode, out)
    finally:
        pool.shutdown(cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)
    _write(args, plan, out, results, bench, time.monotonic() - started, baseline)
    return 0


async def _profile(bench: Bench, rows: list[dict[str, Any]], results: dict[str, Any],
                   mode: str, out: Path) -> None:
    """One more round of the gateway under py-spy per scenario, and the what-ifs (none of
    them in the medians)."""
    wanted = {r["scenario"] for r in rows if mode == "all" or r["met"] is False}
    if any(r["metric"].startswith("mem_kib") and (mode == "all" or r["met"] is False)
           for r in rows):
        print("bench: memory probe of the gateway (tracemalloc) ...", file=sys.stderr)
        try:
            probe = await asyncio.wait_for(memory_probe(bench, 5000 if not bench.plan.quick
                                                        else 1000), 300)
            bench.extra_profiles["idle-memory"] = report.memory_text(probe)
        except Exception as exc:
            traceback.print_exc()
            bench.note(f"memory probe failed: {type(exc).__name__}: {exc}".splitlines()[0])
    bench.profile_dir, bench.extra_round = out / "profiles", True
    try:
        for scenario in (s for s in SCENARIOS if s in wanted):
            sink: dict[str, Any] = {}
            await _measure(bench, scenario, _factory("gateway", bench.plan, bench.workdir,
                                                     scenario), 1, "gateway (profiled)", sink)
    finally:
        bench.profile_dir, bench.extra_round = None, False
    await whatif.run(bench, wanted)


def _write(args: argparse.Namespace, plan: Plan, out: Path, results: dict[str, Any],
           bench: Bench, elapsed: float, baseline: Source | None = None) -> None:
    path = out / "results.json"
    previous: dict[str, Any] = {}
    if path.exists() and set(args.scenarios) != set(SCENARIOS):
        try:  # a partial run updates its scenarios and keeps the others
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # Per contender: a run of some contenders keeps the others' numbers of that scenario.
    # The baseline's numbers go with the gateway's of the same run, never with another's.
    merged = dict(previous.get("scenarios", {}))
    baselines: dict[str, str] = dict(previous.get("meta", {}).get("baseline", {}))
    for scenario, per_contender in results.items():
        kept, fresh = merged.get(scenario, {}), dict(per_contender)
        if "gateway" in fresh:
            kept = {k: v for k, v in kept.items() if k != "baseline"}
            baselines.pop(scenario, None)
        elif fresh.pop("baseline", None) is not None:
            bench.note(f"{scenario} / baseline: not kept, as the gateway failed in this run")
        merged[scenario] = {**kept, **fresh}
        if baseline is not None and "baseline" in fresh:
            baselines[scenario] = baseline.label
    measured_at = {**previous.get("measured_at", {}), **{s: finished for s in results}}
    profiles = {**previous.get("profiles", {}), **{
        name: {"path": _relative(p.path), "text": report.profile_text(name, p, _relative(p.path))}
        for name, p in bench.profiles.items()},
        **{name: {"path": None, "text": text} for name, text in bench.extra_profiles.items()}}
    rows = report.summary(merged)
    notes = list(dict.fromkeys([*previous.get("notes_kept", []), *bench.notes,
                                *_scale_notes(plan)]))
    unmet = _unmet(rows, merged, profiles)
    command = "scripts/bench" + (" --quick" if plan.quick else "")
    if baseline is not None:
        command += f" --baseline {baseline.ref}"
    machine = _machine(bench.wrk)
    # Which machine measured each scenario: a partial run on another machine keeps the
    # others' numbers, and RESULTS.md must not credit them to this one.
    before = previous.get("meta", {})
    machines = {**{s: before.get("machine", {}).get("machine", "?")
                   for s in previous.get("scenarios", {})},
                **before.get("machines", {}), **{s: machine["machine"] for s in results}}
    meta = {"command": command,
            "finished": finished, "mode": "quick" if plan.quick else "full",
            "elapsed_s": elapsed, "machine": machine, "machines": machines,
            "plan": dataclasses.asdict(plan), "measured_at": measured_at, "ran": list(results)}
    if baselines:  # which build the baseline column is, per scenario
        meta["baseline"] = {s: baselines[s] for s in merged if s in baselines}
    document = {"meta": meta, "measured_at": measured_at, "summary": rows, "scenarios": merged,
                "profiles": profiles, "notes_kept": notes}
    path.write_text(json.dumps(document, indent=1, default=_round) + "\n")
    (out / "RESULTS.md").write_text(report.render(meta, rows, notes, unmet, merged))
    print(f"bench: wrote {out / 'RESULTS.md'} and {path} ({elapsed:.0f}s)", file=sys.stderr)
    if out.resolve() == HERE.resolve() and not plan.quick:
        _update_readme(meta, rows)
    print(report.table(rows))


README = HERE.parent / "README.md"
_TABLE_START, _TABLE_END = "<!-- bench:table -->", "<!-- /bench:table -->"


def _update_readme(meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The README shows the latest full run's table, between two markers."""
    text = README.read_text()
    if _TABLE_START not in text or _TABLE_END not in text:
        print("bench: README.md has no bench:table markers; not updated", file=sys.stderr)
        return
    head, rest = text.split(_TABLE_START, 1)
    _, tail = rest.split(_TABLE_END, 1)
    mixed = len(set(meta.get("measured_at", {}).values())) > 1
    body = (f"\n_From `{meta['command']}`, {meta['finished']}"
            f"{' (some scenarios from earlier runs)' if mixed else ''}; when and where each "
            f"was measured, details and profiles in [bench/RESULTS.md](bench/RESULTS.md)._"
            f"\n\n{report.table(rows)}\n")
    README.write_text(head + _TABLE_START + body + _TABLE_END + tail)
    print("bench: updated the table in README.md", file=sys.stderr)


def _relative(path: Path) -> str:
    root = HERE.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _scale_notes(plan: Plan) -> list[str]:
    limit = fd_limit()
    notes = []
    if plan.quick:
        notes.append("QUICK run: small counts, one round, a 2 s heartbeat; a smoke test, "
                     "not results to compare with the goals.")
    if plan.idle_to_fd_limit:
        notes.append(f"idle 'fd limit' = {limit - 200:,} streams for the gateway, nchan and "
                     f"pushpin (the hard descriptor limit {limit:,} less 200 for everything "
                     f"else), {(limit - 200) // 2:,} for the naive app, which needs a second "
                     "descriptor per stream for its own Redis connection.")
    return notes


def _unmet(rows: list[dict[str, Any]], results: dict[str, Any],
           profiles: dict[str, Any]) -> list[str]:
    """For each scenario with an unmet goal: the CPU split measured, and the profiles."""
    lines: list[str] = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows if r["met"] is False):
        lines += [f"### {scenario}", "", "Missed:", ""]
        for r in rows:
            if r["scenario"] == scenario and r["met"] is False:
                versus = f"; is {r['compared']:.2f}x" if "x" in r["goal"] else ""
                lines.append(f"- {r['label']}: {report.fmt(r['gateway'])} {r['unit']} "
                             f"(goal {r['goal']}{versus})")
        lines.append("")
        if scenario in READINGS:
            lines += ["What bounds it, and what would move it:", "", READINGS[scenario], ""]
        context, bound_by_client = [], []
        for column, per_round in results.get(scenario, {}).items():
            extra = {k: median([m[k] for m in per_round if k in m])
                     for k in (per_round[0] if per_round else {})
                     if k.startswith(("client_cpu", "server_cpu", "redis_cpu", "grip_cpu",
                                      "browser_cpu", "driver_cpu", "publisher_cpu",
                                      "publish_per_s", "server_us_per_stream", "missing"))}
            if extra:
                context.append(f"{column}: " + ", ".join(f"{k} {report.fmt(v)}"
                                                         for k, v in extra.items()))
            if column != "gateway" and any(v >= 90 for k, v in extra.items()
                                           if k.startswith("client_cpu")):
                bound_by_client.append(column)
        if context:
            lines += ["Measured beside it (`*_cpu` in % of one core; client = the bench's own "
                      "process, the load generator):", ""] + [f"- {c}" for c in context] + [""]
        for column in bound_by_client:
            lines += [f"{column}'s numbers here are bounded by the load generator (at 90 % "
                      f"of a core or more), not by {column}: the true ratio is further off.", ""]
        for name, profile in profiles.items():
            if name == scenario or name.startswith(scenario + "-"):
                lines += [profile["text"], ""]
    return lines


def _render(out: Path) -> int:
    """RESULTS.md again from results.json (after a change of the report's format)."""
    path = out / "results.json"
    document = json.loads(path.read_text())
    meta, scenarios = document["meta"], document["scenarios"]
    meta.setdefault("ran", list(scenarios))
    meta.setdefault("measured_at", document.get("measured_at", {}))
    rows = report.summary(scenarios)
    document["summary"] = rows
    path.write_text(json.dumps(document, indent=1, default=_round) + "\n")
    unmet = _unmet(rows, scenarios, document.get("profiles", {}))
    (out / "RESULTS.md").write_text(report.render(meta, rows, document.get("notes_kept", []),
                                                  unmet, scenarios))
    if out.resolve() == HERE.resolve() and meta.get("mode") == "full":
        _update_readme(meta, rows)
    print(report.table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.render:
        return _render(args.out or (HERE / "quick" if args.quick else HERE))
    if args.baseline is None:
        return _main(args, None)
    with worktree(args.baseline) as source:
        return _main(args, source)


def _main(args: argparse.Namespace, baseline: Source | None) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(args, baseline))
    return uvloop.run(_run(args, baseline))


if __name__ == "__main__":
    sys.exit(main())
