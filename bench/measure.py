"""What the bench reads off the servers: CPU seconds, resident memory, py-spy profiles."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def own_cpu_seconds() -> float:
    """This process's CPU (the load generator's share, to tell when the client is busy)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuWindow:
    """CPU used by servers, helpers and the client between ``start()`` and ``stop()``."""

    servers: Sequence[int]
    backends: Sequence[int] = ()
    wall: float = 0.0
    server: float = 0.0
    backend: float = 0.0
    client: float = 0.0
    _t: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    def start(self) -> CpuWindow:
        self._t = (time.monotonic(), cpu_seconds(self.servers), cpu_seconds(self.backends),
                   own_cpu_seconds())
        return self

    def stop(self) -> CpuWindow:
        t, s, b, c = self._t
        self.wall = time.monotonic() - t
        self.server = cpu_seconds(self.servers) - s
        self.backend = cpu_seconds(self.backends) - b
        self.client = own_cpu_seconds() - c
        return self

    def shares(self) -> dict[str, float]:
        """Each side's CPU as a fraction of one core over the window."""
        wall = self.wall or 1e-9
        return {"server": self.server / wall, "backend": self.backend / wall,
                "client": self.client / wall}


async def settle(pids: Sequence[int], *, quiet: float = 0.05, within: float = 10.0) -> None:
    """Wait (bounded) until the servers use less than ``quiet`` of a core over 0.25 s."""
    import asyncio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        await asyncio.sleep(0.25)
        if cpu_seconds(pids) - before < quiet * 0.25:
            return


# -- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = sorted(v for v in values if v == v)
    if not clean:
        return float("nan")
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


# -- profiles -------------------------------------------------------------------------


@dataclass
class Profile:
    """A py-spy profile as collapsed stacks, and the frames where the time went."""

    path: Path
    samples: int = 0
    seconds: float = 0.0
    rate: int = 0
    self_time: list[tuple[str, float]] = field(default_factory=list)
    inclusive: list[tuple[str, float]] = field(default_factory=list)
    callers: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def summarise(self, top: int = 12) -> None:
        stacks: list[tuple[list[str], int]] = []
        for line in self.path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks.append(([_short(f) for f in stack.split(";")], int(count)))
        self.samples = total = sum(n for _, n in stacks)
        if not total:
            return
        own: Counter[str] = Counter()
        below: Counter[str] = Counter()
        for frames, n in stacks:
            own[frames[-1]] += n
            for name in set(frames):
                below[name] += n
        self.self_time = [(k, v / total) for k, v in own.most_common(top)]
        # Who runs the C frames that cost most (a system call, the garbage collector):
        # the nearest Python function above them.
        for name, _ in self.self_time[:4]:
            if ".py)" in name:
                continue
            near: Counter[str] = Counter()
            for frames, n in stacks:
                if frames[-1] == name:
                    near[next((f for f in reversed(frames) if ".py)" in f), "?")] += n
            self.callers[name] = [(k, v / total) for k, v in near.most_common(3)]
        self.inclusive = _distinct(stacks, below, total, top)

    @property
    def busy(self) -> float:
        """Share of the window the process was on a CPU (py-spy drops idle samples)."""
        expected = self.seconds * self.rate
        return self.samples / expected if expected else float("nan")


def _distinct(stacks: list[tuple[list[str], int]], below: Counter[str], total: int,
              top: int) -> list[tuple[str, float]]:
    """Python functions by inclusive time, without the ones that only wrap another.

    A middleware chain puts ten functions at the same share; a function drops out when
    nearly all its samples (all but 2 % of the total) also pass through one function it
    calls, which says more.
    """
    candidates = [k for k, v in below.most_common() if ".py)" in k and v < 0.95 * total][:60]
    index = {name: i for i, name in enumerate(candidates)}
    pairs: Counter[tuple[str, str]] = Counter()
    for frames, n in stacks:
        seen: list[str] = []
        for f in frames:
            if f in index and f not in seen:
                for outer in seen:
                    pairs[(outer, f)] += n
                seen.append(f)
    slack = 0.02 * total
    wrappers = {outer for (outer, inner), n in pairs.items()
                if outer != inner and n >= below[outer] - slack}
    return [(k, below[k] / total) for k in candidates if k not in wrappers][:top]


def _short(frame: str) -> str:
    # "dispatch (gateway/hub.py:280)" -> "dispatch (gateway/hub.py)": lines split a
    # function's time into many rows; a function is what a reader acts on.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, path: Path, rate: int = 100) -> Iterator[Profile]:
    """py-spy record on ``pid`` while the block runs; the profile is summarised after."""
    profile = Profile(path, rate=rate)
    binary = py_spy()
    if binary is None:
        yield profile
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # --native: time in C (the garbage collector, system calls, uvloop) shows as such,
    # instead of being charged to whichever Python line happened to trigger it. It pauses
    # the process for each sample (a few ms with native unwinding: hence 100 Hz), which is
    # why profiled rounds never count in the medians.
    process = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
         "--output", str(path), "--native"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "error"})
    started = time.monotonic()
    try:
        yield profile
    finally:
        profile.seconds = time.monotonic() - started
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if path.exists():
            profile.summarise()
