"""``gateway demo`` as a newcomer runs it: the URL it prints, a page of jobs that move,
complete, fail and get canceled, and a stop (Ctrl-C, SIGTERM, or ``--duration``) that
leaves no process behind.

``UPDATE_SCREENSHOT=1`` makes the first test write its screenshot to docs/dashboard.png,
the picture in the README.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page

from gateway.contract import keys
from gateway.embedded import free_port

SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (by parent), with its command name."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = (int(fields[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def _servers() -> set[int]:
    """The Valkey/Redis servers running now (the tests' own among them)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("valkey-server", "redis-server") and _alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Demo:
    def __init__(self, *options: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--port", str(self.port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def url(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no URL printed: {''.join(self.output)}") from None
            if line.startswith("Dashboard: "):
                return line.split(" ", 1)[1].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.stop()


def _statuses(page: Page) -> set[str]:
    return set(page.evaluate(
        "[...document.querySelectorAll('#rows tr')].map(tr => tr.dataset.status)"))


def _stopped_cleanly(demo: Demo, children: dict[int, str], how: str) -> None:
    began = time.monotonic()
    code = demo.process.wait(15)
    took = time.monotonic() - began
    assert code == 0, "".join(demo.output)
    assert took < 5, f"{how}: stopped in {took:.1f} s"
    left = {pid: name for pid, name in children.items() if _alive(pid)}
    assert left == {}, f"{how}: left running: {left}"
    assert "stopped" in demo.output[-1]


def test_the_demo_shows_every_state_then_ctrl_c_stops_everything(
    demos: list[Demo], page: Page, tmp_path: Path
) -> None:
    demo = Demo("--rate", "2", "--workers", "6")
    demos.append(demo)
    url = demo.url()
    assert url == f"http://127.0.0.1:{demo.port}/"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(url)
    deadline = time.monotonic() + 25
    while not {"running", "completed", "failed", "canceled"} <= _statuses(page):
        assert time.monotonic() < deadline, f"only {_statuses(page)}"
        time.sleep(0.2)
    # Bars move: some running job's percent goes up.
    progress = "Object.fromEntries([...document.querySelectorAll('#rows tr')].map(tr => " \
        "[tr.dataset.jobId, Number(tr.querySelector('[role=progressbar]')" \
        ".getAttribute('aria-valuenow'))]))"
    before = page.evaluate(progress)
    time.sleep(1.5)
    after = page.evaluate(progress)
    assert any(after.get(job, 0) > percent for job, percent in before.items())
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)

    children = _descendants(demo.process.pid)
    assert any("valkey" in name or "redis" in name for name in children.values()), children
    os.killpg(demo.process.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
    _stopped_cleanly(demo, children, "Ctrl-C")


def test_sigterm_and_the_duration_stop_it_too(demos: list[Demo]) -> None:
    demo = Demo("--workers", "2")
    demos.append(demo)
    demo.url()
    time.sleep(1)
    children = _descendants(demo.process.pid)
    demo.process.send_signal(signal.SIGTERM)
    _stopped_cleanly(demo, children, "SIGTERM")

    timed = Demo("--duration", "2", "--rate", "5")
    demos.append(timed)
    timed.url()
    children = _descendants(timed.process.pid)
    _stopped_cleanly(timed, children, "--duration")


@pytest.mark.parametrize("delay", [0.2, 0.6, 1.0])
def test_a_stop_while_it_starts_leaves_nothing_either(demos: list[Demo], delay: float) -> None:
    before = _servers()
    demo = Demo("--workers", "1")
    demos.append(demo)
    time.sleep(delay)  # python starting, the Valkey starting, the gateway starting
    demo.process.send_signal(signal.SIGTERM)
    # 0, or -SIGTERM when the signal came while Python itself was starting, before the
    # demo had its handlers (and had started nothing): either way nothing may be left.
    assert demo.process.wait(10) in (0, -signal.SIGTERM), "".join(demo.output)
    time.sleep(0.2)
    assert _servers() <= before


def test_if_its_valkey_dies_the_demo_stops_and_says_so(demos: list[Demo]) -> None:
    demo = Demo("--workers", "2")
    demos.append(demo)
    demo.url()
    children = _descendants(demo.process.pid)
    valkey = next(pid for pid, name in children.items() if "valkey" in name or "redis" in name)
    os.kill(valkey, signal.SIGKILL)
    assert demo.process.wait(15) == 1
    assert any("its Valkey stopped" in line for line in demo.output), demo.output
    assert not any(_alive(pid) for pid in children)


def test_a_port_in_use_is_refused_before_anything_starts(demos: list[Demo]) -> None:
    first = Demo("--workers", "1")
    demos.append(first)
    first.url()
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--port", str(first.port)],
        capture_output=True, text=True, timeout=30)
    assert second.returncode == 2
    assert f"port {first.port}" in second.stderr and "in use" in second.stderr
    for port, said in (("99999", "no TCP port"), ("0", "no address to open")):
        refused = subprocess.run([sys.executable, "-m", "gateway", "demo", "--port", port],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    for option, value in (("--rate", "0"), ("--workers", "0"), ("--duration", "-1"),
                          ("--rate", "nan"), ("--rate", "1000")):
        bad = subprocess.run([sys.executable, "-m", "gateway", "demo", option, value],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and f"{option} must be" in bad.stderr, bad.stderr


def test_only_the_workers_on_a_shared_redis(redis_url: str, r: redis.Redis) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--only-workers", "--workers", "2",
         "--rate", "5", "--tenant", "acme"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while r.zcard(keys.index_key("acme")) < 5:
            assert time.monotonic() < deadline, "no jobs from the workers"
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while not any(r.hget(keys.job_key("acme", job_id.decode()), "status") == b"running"
                      for job_id in r.zrange(keys.index_key("acme"), 0, -1)):
            assert time.monotonic() < deadline, "no job ever ran"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
        assert process.stdout is not None
        assert b"stopped (" in process.stdout.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    unset = subprocess.run([sys.executable, "-m", "gateway", "demo", "--only-workers"],
                           env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
                           capture_output=True, text=True, timeout=30)
    assert unset.returncode == 2 and "set REDIS_URL" in unset.stderr
