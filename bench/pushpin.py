"""The pushpin contender: Debian's pushpin (a GRIP proxy) with the GRIP backend of
``bench/grip_backend.py``, started and stopped by the bench in a scratch directory.

Three process trees, all on loopback and all in that directory:

- the GRIP backend (``python -m bench.grip_backend``), which answers each new stream with
  ``Grip-Hold: stream`` and the opening snapshot; its CPU and memory are reported apart;
- zurl, pushpin's HTTP client for the requests it proxies to the backend. Debian's pushpin
  does not start it (its internal.conf points at a system zurl in /var/run/zurl), so the
  bench starts one on IPC sockets of the scratch run directory. Its stock ``deny=127.*``
  stays: pushpin-proxy marks requests to route targets ``ignore-policies``;
- ``pushpin --config <copy of /etc/pushpin/pushpin.conf>``, the runner, which starts the
  connection manager (condure, or connmgr in later releases), pushpin-proxy and
  pushpin-handler. The copy moves the run and log directories, routes file and every
  port to the scratch directory or to free loopback ports: clients on ``http_port``
  (bound to 127.0.0.1), HTTP publishing on ``push_in_http_port``, and the handler's
  ZeroMQ publish, subscribe and command sockets (TCP 5560, 5562 and 5563 by default) on
  IPC. Nothing listens on a fixed port.

The runner gets a session of its own: SIGTERM to it stops its services, and whatever is
left in the session after that (the runner puts each service in a process group of its
own, but not in a session of its own) is stopped, so that no process outlives a round
(also on a failure or Ctrl-C, through ``Contender.__exit__``).
"""

from __future__ import annotations

import configparser
import contextlib
import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from bench.contenders import Contender, _apt_install, _stop, _tail, _wait_http, fd_limit
from bench.publish import Target
from gateway.embedded import free_port

CONFIG = Path("/etc/pushpin/pushpin.conf")
INTERNAL = Path("/usr/lib/pushpin/internal.conf")
PROGRAMS = ("pushpin", "pushpin-proxy", "pushpin-handler", "zurl")
# Pushpin-handler's rate limiter (message_rate, 2,500 deliveries/s in Debian's config) is
# turned off (0), for two reasons found by hand. Its batch timer restarts at each new
# publish (RateLimiter::setup calls QTimer::setInterval on the running timer), so while
# publishes come less than 25 ms apart nothing is delivered: one watcher of updates at
# 100/s got them after 0.5 s at the median, 1 s at the worst (2 ms with it off). And its
# pace is a configured cap, as nginx's worker_connections is for nchan: one update to 200
# watchers took 80 ms. Without it a stream still queues only 100 updates it cannot write
# yet (PUBLISH_QUEUE_MAX in httpsession.cpp) and drops newer ones, its last included:
# 3,000 updates of one job to 100 watchers in 1.9 s reached each about 2,100 times, the
# last one none (the burst scenario reports that as `missing`). The limiter's queue bound
# (message_hwm, 25,000 deliveries) still applies to what one POST brings, so it is raised.
MESSAGE_RATE = 0
MESSAGE_HWM = 10_000_000
_SYSTEM_ZURL = re.compile(r"ipc://[^,\s]*/zurl-")


def missing() -> str | None:
    """Why pushpin cannot run here, after an attempt to install it, or None."""
    if _problem() is None:
        return None
    _apt_install(["pushpin", "condure", "zurl"])
    return _problem()


def _problem() -> str | None:
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    if absent or not CONFIG.exists():
        return (f"{', '.join(absent) or CONFIG} missing and `apt-get install pushpin "
                "condure zurl` did not provide them")
    manager = _connection_manager()
    if manager is None:
        return f"{CONFIG} names no condure or connmgr in [runner] services"
    if shutil.which(manager) is None:
        return f"{manager} (in {CONFIG} [runner] services) is not installed"
    return None


def unavailable() -> str | None:
    """Why pushpin is skipped in this run, or None: missing (and not installable), or it
    did not start once, tried here so that it is not a failure in every scenario."""
    reason = missing()
    if reason is not None:
        return reason
    with tempfile.TemporaryDirectory(prefix="bench-pushpin-check-") as scratch:
        try:
            with Pushpin(Path(scratch)):
                return None
        except Exception as exc:
            return f"it did not start: {type(exc).__name__}: {exc}"[:1000]


def _read(path: Path) -> configparser.ConfigParser:
    # Pushpin's files are Qt INI: keys are case-sensitive and values hold braces.
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _connection_manager() -> str | None:
    services = _read(CONFIG).get("runner", "services", fallback="")
    return next((s.strip() for s in services.split(",")
                 if s.strip() in ("condure", "connmgr")), None)


class Pushpin(Contender):
    name = column = "pushpin"
    backend_name = "grip"  # its helper: the GRIP backend (no Redis)

    def __init__(self, workdir: Path, heartbeat: float | None = None) -> None:
        super().__init__(workdir)
        self.heartbeat = heartbeat
        self.dir: tempfile.TemporaryDirectory[str] | None = None
        self.backend: subprocess.Popen[bytes] | None = None
        self.zurl: subprocess.Popen[bytes] | None = None
        self.runner: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench-pushpin-", dir=self.workdir)
        root = Path(self.dir.name)
        run, logs = root / "run", root / "log"
        run.mkdir()
        logs.mkdir()
        http_port, publish_port, backend_port = free_port(), free_port(), free_port()
        env = {**os.environ, "GRIP_HEARTBEAT_SECONDS": str(self.heartbeat or 15)}
        self.backend = self._spawn(
            [sys.executable, "-m", "bench.grip_backend", "--port", str(backend_port)],
            logs / "grip-backend.log", env=env)
        _wait_http(backend_port, "/healthz", self.backend, logs / "grip-backend.log")
        internal = _redirect_zurl(INTERNAL.read_text())
        (root / "internal.conf").write_text(internal)
        if internal != INTERNAL.read_text():  # a system zurl was expected: bring our own
            (root / "zurl.conf").write_text(_zurl_config(run))
            self.zurl = self._spawn(["zurl", f"--config={root / 'zurl.conf'}"],
                                    logs / "zurl.log")
        (root / "routes").write_text(f"* 127.0.0.1:{backend_port}\n")
        config = root / "pushpin.conf"
        _write_config(config, root, http_port, publish_port)
        # Its own session: what the runner leaves behind can be found (_end_session).
        self.runner = self._spawn(["pushpin", f"--config={config}"], logs / "pushpin.log",
                                  new_session=True)
        # /healthz through pushpin: condure, proxy, zurl and the backend all answer; then
        # held streams and publishing (the handler), which take longer to be ready.
        _wait_http(http_port, "/healthz", self.runner, logs / "pushpin.log")
        _wait_ready(http_port, publish_port, self.runner, logs / "pushpin.log")
        if self.zurl is not None and self.zurl.poll() is not None:
            raise RuntimeError(f"zurl exited at start-up:\n{_tail(logs / 'zurl.log')}")
        self.ports = [http_port]
        self.target = Target("pushpin", str(publish_port))

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
               new_session: bool = False) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=new_session)

    def server_pids(self) -> list[int]:
        """The runner, the services it started, and zurl: pushpin's cost, all of it."""
        import psutil  # type: ignore[import-untyped]

        if self.runner is None:
            return []
        pids = [self.runner.pid]
        try:
            pids += [c.pid for c in psutil.Process(self.runner.pid).children(recursive=True)]
        except psutil.Error:
            pass
        return pids + ([self.zurl.pid] if self.zurl is not None else [])

    def memory_pids(self) -> list[int]:
        return self.server_pids()  # the streams' state is split between its processes

    def backend_pids(self) -> list[int]:
        return [self.backend.pid] if self.backend is not None else []

    def stop(self) -> None:
        if self.runner is not None:
            session = self.runner.pid  # start_new_session: the session id is its pid
            _stop(self.runner)
            _end_session(session)  # whatever the runner did not stop (it was killed, say)
            self.runner = None
        _stop(self.zurl)
        self.zurl = None
        _stop(self.backend)
        self.backend = None
        self.ports = []
        if self.dir is not None:
            self.dir.cleanup()
            self.dir = None


def _end_session(session: int) -> None:
    """Stop every process left in this session. The runner puts each service in a process
    group of its own, but they stay in its session, which the bench created for it."""
    def members() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except (OSError, ValueError):
                continue
            # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
            fields = stat.rpartition(")")[2].split()
            if entry.isdigit() and len(fields) > 3 and int(fields[3]) == session \
                    and fields[0] != "Z":
                found.append(int(entry))
        return found

    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        left = members()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = members()
        if not left:
            return


def _wait_ready(port: int, publish_port: int, process: subprocess.Popen[bytes], log: Path,
                timeout: float = 30.0) -> None:
    """Until, twice in a row, a batch of fresh streams as large as the bench opens at once
    all open, all get a published update, and none ends.

    Just after start-up pushpin is not ready when its runner and services say so:
    pushpin-proxy answers GRIP holds 500 ("Accept service unavailable.") for a moment,
    and for a second or two more pushpin-handler cancels some of the streams it is handed
    ("received message out of sequence"), which the client sees end after their opening
    event. By hand, ramps of 500 streams begun right after one stream had opened lost
    10-38 streams in 5 of 6 tries; begun after this check (about 1.2 s), 0 in 6.
    """
    deadline = time.monotonic() + timeout
    problem: str | None = "no attempt"
    clean = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pushpin exited at start-up:\n{_tail(log)}")
        problem = _ready_round(port, publish_port, min(5.0, deadline - time.monotonic()))
        clean = clean + 1 if problem is None else 0
        if clean == 2:
            return
        time.sleep(0.1)
    raise RuntimeError(f"pushpin not ready in {timeout}s ({problem}):\n{_tail(log)}")


def _ready_round(port: int, publish_port: int, within: float, streams: int = 100) -> str | None:
    """One batch: None if every stream opened, got a published update and is still open."""
    request = (b"GET /v1/jobs/bench-ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Accept: text/event-stream\r\n\r\n")
    update = json.dumps({"items": [{"channel": "bench-ready", "formats": {
        "http-stream": {"content": "event: ready\ndata: {}\n\n"}}}]}).encode()
    deadline = time.monotonic() + within
    received = {}
    with selectors.DefaultSelector() as selector, contextlib.ExitStack() as sockets:
        try:
            for _ in range(streams):
                sock = sockets.enter_context(socket.create_connection(("127.0.0.1", port), 2))
                sock.sendall(request)
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                received[sock] = b""
        except OSError as exc:
            return f"connect: {exc}"
        next_publish = 0.0
        while time.monotonic() < deadline:
            opened = all(b"event: snapshot" in r for r in received.values())
            if opened and all(b"event: ready" in r for r in received.values()):
                # Cancelled streams end just after their first events: give them a moment.
                if not any(key for key, _ in selector.select(0.2)):
                    return None
            if opened and time.monotonic() >= next_publish:
                # Again until all have it: a subscription may lag its stream's opening.
                _publish(publish_port, update)
                next_publish = time.monotonic() + 0.2
            for key, _ in selector.select(0.05):
                sock = cast(socket.socket, key.fileobj)
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                received[sock] += chunk
                head = received[sock][:12]
                if not chunk or head != b"HTTP/1.1 200"[:len(head)]:
                    return f"a stream answered {received[sock][:60]!r} and ended"
    return "no update on every stream in time"


def _publish(port: int, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/publish/", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def _redirect_zurl(internal: str) -> str:
    """internal.conf with the system zurl's sockets moved to the run directory."""
    return _SYSTEM_ZURL.sub("ipc://{rundir}/{ipc_prefix}zurl-", internal)


def _zurl_config(run: Path) -> str:
    return "\n".join([
        "[General]",
        f"in_spec=ipc://{run}/pushpin-zurl-in",
        f"in_stream_spec=ipc://{run}/pushpin-zurl-in-stream",
        f"out_spec=ipc://{run}/pushpin-zurl-out",
        # zurl's stock policy. Pushpin's requests to route targets (the backend on
        # 127.0.0.1) carry ignore-policies, so the deny list applies to nothing here.
        "defpolicy=allow", "allow=", "deny=127.*,10.*,192.168.*,*.local",
        "max_open_requests=2000", "buffer_size=200000", "timeout=600",
        "in_hwm=1000", "out_hwm=1000", ""])


def _write_config(path: Path, root: Path, http_port: int, publish_port: int) -> None:
    """A copy of the installed pushpin.conf with every path and port moved (module doc)."""
    config = _read(CONFIG)
    for section in ("global", "runner", "proxy", "handler"):
        if not config.has_section(section):
            config.add_section(section)
    config["global"].update({"include": str(root / "internal.conf"),
                             "rundir": str(root / "run"), "ipc_prefix": "pushpin-"})
    config["runner"].update({
        "http_port": f"127.0.0.1:{http_port}", "logdir": str(root / "log"),
        # The connection manager's own cap (condure --stream-maxconn): let the descriptor
        # limit be what stops the idle ramp, as for nchan's worker_connections.
        "client_maxconn": str(fd_limit()),
    })
    config["proxy"]["routesfile"] = str(root / "routes")
    config["handler"].update({
        "push_in_spec": "ipc://{rundir}/{ipc_prefix}push-in",
        "push_in_sub_specs": "ipc://{rundir}/{ipc_prefix}push-in-sub",
        "push_in_http_addr": "127.0.0.1", "push_in_http_port": str(publish_port),
        "command_spec": "ipc://{rundir}/{ipc_prefix}command",
        "message_rate": str(MESSAGE_RATE), "message_hwm": str(MESSAGE_HWM),
    })
    with path.open("w") as out:
        config.write(out, space_around_delimiters=False)
