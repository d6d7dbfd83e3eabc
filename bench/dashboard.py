"""The dashboard scenario: the page at ``/`` (docs/dashboard.md) in headless chromium, with
500 jobs on it and 200 updates a second, as it promises to stay smooth under.

The gateway only (and its baseline): no other contender has a page (``Contender.scenarios``).
Per round, on one gateway with its own Redis for the scenario: a fresh browser context
opens ``/`` and waits for the 500 rows; the bench then installs, through Playwright's
``evaluate`` (the page's Content-Security-Policy forbids the eval that ``wait_for_function``
would run, so waits are polled from here), a ``requestAnimationFrame`` loop that records
each frame's start, a ``PerformanceObserver`` of long tasks, and a ``MutationObserver`` on
the table's body that notes (``Date.now()``) when each update's marker first shows in a
row's progress text ("<pct>% · b<k>"). After a second of updates as a warm-up, an idle
window (no updates), then the loaded window: updates paced at 200 a second round robin over
the running jobs, from the publisher process (``publish.spread``, the worker library), which
stamps each with its own clock (``time.time_ns()``: the same machine clock as the page's
``Date.now()``).

The page keeps only the latest snapshot of a job per animation frame, so an update may be
skipped when a later one of the same job comes before the frame; only each job's last
update must show. Chromium, the gateway, Redis, the publisher and the bench all share the
machine's cores: the CPU each used over the loaded window is part of the round's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psutil  # type: ignore[import-untyped]

from bench import publish
from bench.contenders import Contender
from bench.measure import CpuWindow, cpu_seconds, percentile, settle
from bench.plan import Bench

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Playwright

T = TypeVar("T")
Metrics = dict[str, float]
Make = Callable[[], Contender]

CHROMIUM = "/usr/bin/chromium"  # Debian's: the bench never downloads a browser
# Background networking off: nothing but loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CONVERSION = {"source_format": "docx", "target_format": "pdf",
              "original_filename": "quarterly-report.docx"}
_STEP = 30.0  # bound on one step in the browser: launch, load, an evaluate
_DRAIN = 5.0  # after the last update: how long the page may take to draw every job's last
_ROWS = "document.querySelectorAll('#rows tr').length"

# Installed once per page. Frames: the start time of every animation frame (the argument
# of the rAF callback) while a window is open. Long tasks: main-thread tasks over 50 ms.
# Markers: the first time each update's "b<k>" showed in a progress text, by k.
PROBE = """() => {
  if (window.__bench) return;
  const bench = {frames: [], tasks: [], seen: new Map(), on: false, t0: 0};
  window.__bench = bench;
  const frame = (t) => {
    if (bench.on) bench.frames.push(t);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  new PerformanceObserver((list) => {
    if (!bench.on) return;
    for (const e of list.getEntries()) bench.tasks.push([e.startTime, e.duration]);
  }).observe({type: "longtask"});
  const marker = /· b(\\d+)$/;
  new MutationObserver((records) => {
    const now = Date.now();
    for (const record of records) {
      const node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      if (!node || !node.classList.contains("progress-text")) continue;
      const found = marker.exec(node.textContent);
      if (found && !bench.seen.has(Number(found[1]))) bench.seen.set(Number(found[1]), now);
    }
  }).observe(document.getElementById("rows"),
             {childList: true, characterData: true, subtree: true});
  bench.begin = () => {
    bench.frames = [];
    bench.tasks = [];
    bench.t0 = performance.now();
    bench.on = true;
  };
  bench.end = () => {
    bench.on = false;
    const f = bench.frames;
    return {intervals: f.slice(1).map((t, i) => t - f[i]), tasks: bench.tasks,
            seconds: (performance.now() - bench.t0) / 1000};
  };
}"""


async def dashboard(bench: Bench, make: Make, rounds: int) -> list[Metrics]:
    """500 jobs (half running) on the page, 200 updates/s: frames, long tasks, update →
    drawn latency, and each job's last update shown."""
    plan = bench.plan
    jobs = [f"dash{i:03d}" for i in range(plan.dashboard_jobs)]
    running = jobs[::2]
    out: list[Metrics] = []
    with make() as c:
        url = f"http://127.0.0.1:{c.ports[0]}/"
        await asyncio.to_thread(_check_page, url)
        await bench.call(publish.setup, c.target, jobs, running=False, conversion=CONVERSION)
        await bench.call(publish.setup, c.target, running, running=True, conversion=CONVERSION)
        publisher = await bench.call(os.getpid)
        first = 1
        async with _Chromium() as chromium:
            for _ in range(rounds):
                m, first = await _round(bench, c, chromium, url, running, first, publisher)
                out.append(m)
    return out


def _check_page(url: str) -> None:
    """The contender serves the dashboard (a baseline older than it does not)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")),
                                      timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200 or b'id="rows"' not in body:
        raise RuntimeError(f"GET / answered {response.status} without the dashboard's table")


async def _step(awaitable: Awaitable[T], within: float = _STEP) -> T:
    return await asyncio.wait_for(awaitable, within)


async def _round(bench: Bench, c: Contender, chromium: _Chromium, url: str,
                 running: list[str], first: int, publisher: int) -> tuple[Metrics, int]:
    """One round in a fresh browser context; returns its metrics and the next update's k."""
    plan = bench.plan
    rate = plan.dashboard_rate
    context = await _step(chromium.browser.new_context(viewport={"width": 1280, "height": 900}))
    try:
        page = await _step(context.new_page())
        await _step(page.goto(url, timeout=_STEP * 1000), _STEP + 5)
        rows = await _until(page, _ROWS, lambda n: n >= plan.dashboard_jobs, _STEP)
        if rows < plan.dashboard_jobs:
            raise RuntimeError(f"the page showed {rows} rows of {plan.dashboard_jobs} "
                               f"within {_STEP:.0f} s")
        await _step(page.evaluate(PROBE))

        warm = max(1, round(rate * plan.dashboard_warmup_seconds))
        await _step(bench.call(publish.spread, c.target, running, first, warm, rate),
                    plan.dashboard_warmup_seconds * 3 + _STEP)
        first += warm
        await settle(c.server_pids())
        await asyncio.sleep(0.5)  # the warm-up's last frames drawn

        # The other processes on the same cores, in % of a core: chromium (and its
        # renderers apart), Playwright's driver, the publisher.
        beside = _Cpu({"browser_cpu": chromium.browser_pids(),
                       "renderer_cpu": chromium.browser_pids("renderer"),
                       "driver_cpu": chromium.driver_pids, "publisher_cpu": [publisher]})
        await _step(page.evaluate("__bench.begin()"))
        beside.start()
        await asyncio.sleep(plan.dashboard_idle_seconds)
        idle_cpu = beside.shares()
        idle: dict[str, Any] = await _step(page.evaluate("__bench.end()"))

        count = max(2, round(rate * plan.dashboard_seconds))
        window = CpuWindow(c.server_pids(), c.backend_pids())
        await _step(page.evaluate("__bench.begin()"))
        window.start()
        beside.start()
        with bench.profiling(c, "dashboard"):
            stamps = await _step(bench.call(publish.spread, c.target, running, first, count,
                                            rate), plan.dashboard_seconds * 3 + _STEP)
        window.stop()
        loaded_cpu = beside.shares()
        loaded: dict[str, Any] = await _step(page.evaluate("__bench.end()"))

        ks = list(range(first, first + count))
        last = {running[k % len(running)]: k for k in ks}  # each job's last update
        finals = sorted(last.values())
        await _until(page, "ks => ks.filter(k => !__bench.seen.has(k)).length",
                     lambda n: n == 0, _DRAIN, finals)
        shown: list[float | None] = await _step(
            page.evaluate("ks => ks.map(k => __bench.seen.get(k) ?? null)", ks))
    finally:
        await _step(context.close())

    drawn = {k: at for k, at in zip(ks, shown, strict=True) if at is not None}
    latency = [drawn[k] - t0 / 1e6 for k, t0 in zip(ks, stamps, strict=True) if k in drawn]
    missing = sum(1 for k in finals if k not in drawn)
    if missing:
        bench.note(f"{c.name}: dashboard: {missing} of {len(finals)} jobs' last update never "
                   f"showed within {_DRAIN:.0f} s")
    frames, idle_frames = loaded["intervals"], idle["intervals"]
    per_10s = 10.0 / max(loaded["seconds"], 1e-9)
    p99, idle_p99 = percentile(frames, 99), percentile(idle_frames, 99)
    m: Metrics = {
        "frame_p50_ms": percentile(frames, 50), "frame_p99_ms": p99,
        "frame_max_ms": max(frames, default=float("nan")),
        "idle_frame_p50_ms": percentile(idle_frames, 50), "idle_frame_p99_ms": idle_p99,
        "frame_p99_ratio": p99 / idle_p99 if idle_p99 == idle_p99 and idle_p99 else float("nan"),
        "frames": len(frames),
        "longtasks_per_10s": len(loaded["tasks"]) * per_10s,
        "longtask_ms_per_10s": sum(d for _, d in loaded["tasks"]) * per_10s,
        "idle_longtasks": len(idle["tasks"]),
        "latency_p50_ms": percentile(latency, 50), "latency_p99_ms": percentile(latency, 99),
        "latency_max_ms": max(latency, default=float("nan")),
        "missing_final": missing / len(finals),
        "skipped": 1 - len(drawn) / count,
        "published": count,
        "publish_per_s": (count - 1) / ((stamps[-1] - stamps[0]) / 1e9),
        "server_cpu": window.shares()["server"] * 100,
        "redis_cpu": window.shares()["backend"] * 100,
        **loaded_cpu,
        **{f"idle_{k}": v for k, v in idle_cpu.items()},
        "client_cpu": window.shares()["client"] * 100,
    }
    return m, first + count


class _Cpu:
    """CPU of groups of processes since ``start()``, in % of one core."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._at = 0.0
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._at = time.monotonic()
        self._before = {name: cpu_seconds(pids) for name, pids in self.groups.items()}

    def shares(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._at, 1e-9)
        return {name: (cpu_seconds(pids) - self._before[name]) / wall * 100
                for name, pids in self.groups.items()}


async def _until(page: Page, expression: str, done: Callable[[int], bool], within: float,
                 arg: Any = None) -> int:
    """Poll ``expression`` (a number; a function of ``arg`` where given) from here until
    ``done`` says so or the bound passed; returns the last value."""
    deadline = time.monotonic() + within
    while True:
        value = int(await _step(page.evaluate(expression, arg)))
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.05)


class _Chromium:
    """Playwright and Debian's chromium, for the scenario's rounds; both stopped on the
    way out, and any of their processes left after a bounded close killed by pid."""

    def __init__(self) -> None:
        self.playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.driver_pids: list[int] = []

    @property
    def browser(self) -> Browser:
        if self._browser is None:
            raise RuntimeError("chromium is not running")
        return self._browser

    def browser_pids(self, kind: str | None = None) -> list[int]:
        """Every process of chromium (browser, renderers, GPU, network: the driver's
        descendants), or those of one ``--type`` (``renderer``)."""
        found = []
        for process in self._processes()[1]:
            with contextlib.suppress(psutil.Error):
                if kind is None or f"--type={kind}" in process.cmdline():
                    found.append(process.pid)
        return found

    def _processes(self) -> tuple[list[Any], list[Any]]:
        """The driver's processes, and their descendants (psutil.Process objects)."""
        drivers: list[Any] = []
        for pid in self.driver_pids:
            with contextlib.suppress(psutil.Error):
                drivers.append(psutil.Process(pid))
        below: list[Any] = []
        for driver in drivers:
            with contextlib.suppress(psutil.Error):
                below += driver.children(recursive=True)
        return drivers, below

    async def __aenter__(self) -> _Chromium:
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:
            raise RuntimeError("the dashboard scenario needs playwright (the `test` extra)") \
                from exc
        mine = psutil.Process()
        before = {p.pid for p in mine.children()}
        try:
            self.playwright = await _step(async_playwright().start())
            self.driver_pids = [p.pid for p in mine.children() if p.pid not in before]
            self._browser = await _step(self.playwright.chromium.launch(
                executable_path=CHROMIUM, args=FLAGS, timeout=_STEP * 1000), _STEP + 5)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        drivers, below = self._processes()
        left = below + drivers
        try:
            if self._browser is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await _step(self._browser.close())
            if self.playwright is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await _step(self.playwright.stop())
        finally:
            self._browser = self.playwright = None
            _kill(left)


def _kill(processes: list[Any]) -> None:
    """Kill those of these processes (chromium's, Playwright's driver) still running: each
    a psutil.Process taken while it ran, so that a reused pid is never hit."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                alive.append(process)
    psutil.wait_procs(alive, timeout=5)
