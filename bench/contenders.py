"""The servers under test: start each on loopback, tell the bench where it is, stop it.

Five contenders: this gateway (one process, or two behind one Redis), the naive Starlette +
sse-starlette app of ``bench/naive_app.py``, nginx + nchan (memory store, one worker) as the
reference peer written in C, pushpin (a GRIP proxy, with the small GRIP backend
it needs; in ``bench/pushpin.py``) as a second peer in every scenario nchan runs in, and
the floor of ``bench/floor_app.py``: a bare ASGI app on the gateway's own server stack, in
the scenarios it serves. Each gets a fresh server per measured round, so that
one round's memory and connections never leak into the next. With ``--baseline REF`` a
sixth, ``Baseline``, is the gateway of an earlier build (REF checked out by
``bench/baseline.py``), started exactly as the gateway is.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from bench.baseline import source_env
from bench.publish import Target
from gateway.embedded import EmbeddedRedis, free_port

NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NCHAN_TEMPLATE = Path(__file__).with_name("nchan.conf")
_FD_RESERVE = 200  # descriptors a server (or the bench) needs besides its streams
# The scenarios of job streams (bench/scenarios.py): every contender serves them unless
# its class says otherwise. The dashboard (bench/dashboard.py) and the scale scenario
# (bench/scale.py: processes and backends it starts itself) are the gateway's own.
STREAMS = frozenset({"idle", "heartbeat", "fanout", "throughput", "latency", "json", "burst"})


def fd_limit() -> int:
    """Raise this process's soft limit on descriptors to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- installing nchan and wrk ---------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def ensure_tools(want_nchan: bool, want_wrk: bool) -> dict[str, str]:
    """Install nginx + nchan and wrk from Debian where missing.

    Returns the reason each missing tool could not be had (an empty dict: all there).
    """
    missing = []
    if want_nchan and (nginx_binary() is None or not NCHAN_MODULE.exists()):
        missing += ["nginx-light", "libnginx-mod-nchan"]
    if want_wrk and shutil.which("wrk") is None:
        missing.append("wrk")
    if missing:
        _apt_install(missing)
    reasons: dict[str, str] = {}
    if want_nchan and (nginx_binary() is None or not NCHAN_MODULE.exists()):
        reasons["nchan"] = (f"nginx or {NCHAN_MODULE} missing and `apt-get install "
                            f"nginx-light libnginx-mod-nchan` did not provide them")
    if want_wrk and shutil.which("wrk") is None:
        reasons["wrk"] = "wrk missing and `apt-get install wrk` failed"
    return reasons


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"bench: cannot install {' '.join(packages)} (needs root and apt-get)",
              file=sys.stderr)
        return
    print(f"bench: installing {' '.join(packages)} from Debian", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Debian's nginx package starts a system nginx on port 80 after install unless a
    # policy-rc.d forbids it; the bench wants the binary only.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    try:
        if made_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            try:
                subprocess.run(command, env=env, check=True, timeout=600,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                tail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-500:]
                print(f"bench: {' '.join(command)} failed: {tail}", file=sys.stderr)
                return
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


# -- processes ------------------------------------------------------------------------


def _wait_http(port: int, path: str, process: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited at start-up:\n{_tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} not ready in {timeout}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
          timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Contender:
    """One server under test; a context manager that starts and stops it."""

    name = "?"
    column = "?"  # which column of the results table it fills
    backend_name = "redis"  # what backend_pids() are: names their metrics (redis_kib, ...)
    scenarios = STREAMS  # the scenarios it can serve: the bench skips it in the others

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports: list[int] = []
        self.max_streams = fd_limit() - _FD_RESERVE
        self.target = Target("redis", "")

    def stream_path(self, job_id: str) -> str:
        return f"/v1/jobs/{job_id}"

    def json_path(self, job_id: str) -> str:
        return f"/v1/jobs/{job_id}"

    def server_pids(self) -> list[int]:
        """The processes whose memory and CPU the bench reports."""
        raise NotImplementedError

    def memory_pid(self) -> int:
        """The process whose resident memory grows with the streams."""
        return self.server_pids()[0]

    def memory_pids(self) -> list[int]:
        """Whose resident memory, summed, counts as the server's."""
        return [self.memory_pid()]

    def backend_pids(self) -> list[int]:
        """Helpers whose cost is reported beside (Redis; pushpin's GRIP backend)."""
        return []

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Contender:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _WithRedis(Contender):
    """A contender fed by workers through its own private Valkey."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.redis: EmbeddedRedis | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.cwd: Path | None = None  # where the servers start (None: the bench's own)

    def _start_redis(self) -> str:
        self.redis = EmbeddedRedis().__enter__()
        with redis.Redis.from_url(self.redis.url) as client:
            # The naive app holds a Redis connection per stream: let Redis take as many as
            # its descriptors allow (the default, 10,000, would cap the naive contender).
            client.config_set("maxclients", fd_limit() - 64)
        self.target = Target("redis", self.redis.url)
        return self.redis.url

    def _spawn(self, argv: list[str], env: dict[str, str], ready_path: str) -> None:
        port = free_port()
        log = self.workdir / f"{self.name.replace(' ', '-')}-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.cwd)
        self.processes.append(process)
        self.ports.append(port)
        _wait_http(port, ready_path, process, log)

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def backend_pids(self) -> list[int]:
        process = getattr(self.redis, "_process", None)
        return [process.pid] if process is not None else []

    def stop(self) -> None:
        for process in self.processes:
            _stop(process)
        self.processes.clear()
        self.ports.clear()
        if self.redis is not None:
            self.redis.__exit__(None, None, None)  # stops it and removes its directory
            self.redis = None


class Gateway(_WithRedis):
    column = "gateway"
    scenarios = STREAMS | {"dashboard", "scale"}  # the page at /; processes x backends

    def __init__(self, workdir: Path, processes: int = 1, heartbeat: float | None = None,
                 memprobe: Path | None = None, env: dict[str, str] | None = None,
                 prelude: str | None = None) -> None:
        super().__init__(workdir)
        self.count = processes
        self.heartbeat = heartbeat
        self.memprobe = memprobe  # run the app under tracemalloc (bench/memprobe.py)
        self.env = env or {}  # what-if rounds: other settings
        self.prelude = prelude  # what-if rounds: Python run before `gateway serve`
        self.name = "gateway" if processes == 1 else f"gateway x{processes}"

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self._start_redis(),
               # Every stream of the bench is the one tenant's: its per-process limit
               # (10,000 by default) would stop the ramp before the descriptor limit.
               "GATEWAY_MAX_STREAMS_PER_TENANT": str(fd_limit()), **self.env}
        if self.heartbeat is not None:
            env["GATEWAY_HEARTBEAT_SECONDS"] = str(self.heartbeat)
        argv = [sys.executable, "-m", "gateway", "serve"]
        if self.memprobe is not None:
            argv = [sys.executable, "-m", "bench.memprobe", "--out", str(self.memprobe)]
        elif self.prelude is not None:
            # The same `gateway serve`, after a line of set-up; --port follows as argv[1:].
            argv = [sys.executable, "-c", f"{self.prelude}; import sys; "
                    "from gateway.cli import main; sys.argv = ['gateway', 'serve', "
                    "*sys.argv[1:]]; sys.exit(main())"]
        for _ in range(self.count):
            self._spawn(argv, env, "/readyz")


class Baseline(Gateway):
    """The gateway of an earlier build: the same ``python -m gateway serve`` (same
    interpreter and venv, one process), run in the worktree at source with it first on
    ``PYTHONPATH``, so that it imports that tree's ``gateway`` package (which
    ``bench.baseline.check_import`` verified for this cwd and environment)."""

    column = "baseline"
    # Not scale: it compares set-ups of this build (an earlier one may have no cluster mode).
    scenarios = Gateway.scenarios - {"scale"}

    def __init__(self, workdir: Path, source: Path, heartbeat: float | None = None) -> None:
        super().__init__(workdir, heartbeat=heartbeat, env=source_env(source))
        self.cwd = source
        self.name = "baseline"


class Naive(_WithRedis):
    name = column = "naive"

    def __init__(self, workdir: Path, heartbeat: float | None = None) -> None:
        super().__init__(workdir)
        self.heartbeat = heartbeat
        # Two descriptors per stream: the client's socket and its own Redis connection.
        self.max_streams = (fd_limit() - _FD_RESERVE) // 2

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self._start_redis()}
        if self.heartbeat is not None:
            env["NAIVE_PING_SECONDS"] = str(self.heartbeat)
        self._spawn([sys.executable, "-m", "bench.naive_app"], env, "/healthz")


class Floor(_WithRedis):
    """The floor (bench/floor_app.py): a bare ASGI app on the gateway's server stack, for
    the scenarios it can serve."""

    name = column = "floor"
    scenarios = frozenset({"idle", "heartbeat", "fanout", "json"})

    def __init__(self, workdir: Path, heartbeat: float | None = None,
                 hub: bool = False) -> None:
        super().__init__(workdir)
        self.heartbeat = heartbeat
        self.hub = hub  # forward the workers' messages (fan-out); elsewhere no pub/sub

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self._start_redis(),
               "FLOOR_HUB": "1" if self.hub else "0"}
        if self.heartbeat is not None:
            env["FLOOR_HEARTBEAT_SECONDS"] = str(self.heartbeat)
        self._spawn([sys.executable, "-m", "bench.floor_app"], env, "/healthz")


class Nchan(Contender):
    name = column = "nchan"

    def __init__(self, workdir: Path, heartbeat: float | None = None) -> None:
        super().__init__(workdir)
        self.heartbeat = heartbeat
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: tempfile.TemporaryDirectory[str] | None = None

    def stream_path(self, job_id: str) -> str:
        return f"/sub/{job_id}"

    def json_path(self, job_id: str) -> str:
        return f"/sub/{job_id}"  # a long-poll GET answers the stored message at once

    def config(self, directory: str, port: int) -> str:
        limit = fd_limit()
        return string.Template(NCHAN_TEMPLATE.read_text()).substitute(
            # nginx counts more than client sockets against worker_connections; let the
            # descriptor limit be what stops it.
            dir=directory, nofile=limit, connections=2 * limit, module=NCHAN_MODULE,
            port=port, ping=int(self.heartbeat or 15),
        )

    def start(self) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.dir = tempfile.TemporaryDirectory(prefix="bench-nchan-", dir=self.workdir)
        port = free_port()
        conf = Path(self.dir.name) / "nginx.conf"
        conf.write_text(self.config(self.dir.name, port))
        log = Path(self.dir.name) / "error.log"
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", self.dir.name, "-e", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.ports = [port]
        self.target = Target("nchan", str(port))
        _wait_http(port, "/healthz", self.process, log)

    def server_pids(self) -> list[int]:
        """The worker (one): master and worker are both counted for CPU by the caller."""
        import psutil  # type: ignore[import-untyped]

        if self.process is None:
            return []
        return [self.process.pid] + [c.pid for c in psutil.Process(self.process.pid).children()]

    def memory_pid(self) -> int:
        return self.server_pids()[-1]  # the worker: it holds the subscribers

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
        self.ports = []
        if self.dir is not None:
            self.dir.cleanup()
            self.dir = None
