"""``gateway serve``'s start (gateway.launch): what stops it with one line, what does not,
and how it stops, run as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from conftest import GatewayProcess, wait_ready

from gateway.embedded import free_port


def serve(*args: str, redis_url: str | None = None, timeout: float = 30,
          **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url is not None:
        environment["REDIS_URL"] = redis_url
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "gateway", "serve", *args], env=environment,
                          capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints (and nothing else: no traceback, no log)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("gateway: "), result.stderr
    return lines[0]


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A loopback port that answers as an HTTP server does, not as Redis."""

    class Http(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def wrong_password(redis_url: str, r: redis.Redis) -> Iterator[str]:
    r.execute_command("ACL", "SETUSER", "launch-user", "on", ">right", "~*", "+@all", "&*")
    try:
        yield redis_url.replace("redis://", "redis://launch-user:wrong@")
    finally:
        r.execute_command("ACL", "DELUSER", "launch-user")


def test_a_wrong_password_stops_the_start_with_one_line(wrong_password: str) -> None:
    line = one_line(serve("--port", str(free_port()), redis_url=wrong_password))
    assert "refuses the credentials" in line and "wrong" not in line  # the password is not shown


def test_an_endpoint_that_is_not_redis_stops_the_start_with_one_line(not_redis: str) -> None:
    line = one_line(serve("--port", str(free_port()), redis_url=not_redis))
    assert "does not speak the Redis protocol" in line


def test_a_redis_that_cannot_be_reached_is_waited_for_not_refused(start_gateway) -> None:
    gateway = start_gateway(f"redis://127.0.0.1:{free_port()}/0", ready=False)
    assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 503


def test_plain_uvicorn_stops_its_start_on_a_wrong_password(wrong_password: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app",
         "--port", str(free_port())],
        env={"REDIS_URL": wrong_password, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "refuses the credentials" in result.stderr


def test_a_port_in_use_stops_the_start_before_anything_else(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(serve("--port", str(port)))  # no REDIS_URL: nothing embedded starts
    assert f"port {port} on 127.0.0.1 is in use" in line


def test_no_private_embedded_server_on_a_public_address_unless_asked() -> None:
    line = one_line(serve("--host", "0.0.0.0", "--port", str(free_port()), "--insecure"))
    assert "REDIS_URL is unset" in line and "--embedded" in line


def test_ctrl_c_stops_the_gateway_before_its_embedded_server(tmp_path) -> None:
    # Ctrl-C in a terminal signals the whole foreground process group.
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", why=log.read_text)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(15) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    text = log.read_text()
    redis_port = int(re.search(r"REDIS_URL=redis://127\.0\.0\.1:(\d+)/0", text)[1])  # type: ignore[index]
    assert not re.search(r"connection lost|refused|reconnect", text, re.I), text
    with socket.socket() as probe:
        probe.settimeout(0.5)
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0  # stopped with the gateway


def test_workers_share_the_port_and_each_ends_its_streams_on_sigterm(redis_url: str) -> None:
    gateway = GatewayProcess(redis_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(gateway.port), "--workers", "2"],
        env=gateway.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)  # its group: a failed test kills the workers too
    try:
        deadline = time.monotonic() + 30
        with redis.Redis.from_url(redis_url) as client:
            while True:  # each worker process names its Redis connections with its pid
                names = {c["name"] for c in client.client_list()
                         if c["name"].startswith("gateway-hub-")}
                if len(names) >= 2 and httpx.get(f"{gateway.url}/readyz",
                                                 timeout=2).status_code == 200:
                    break
                assert time.monotonic() < deadline, f"two worker processes did not start: {names}"
                time.sleep(0.1)
        with redis.Redis.from_url(redis_url) as client:
            from gateway.worker import SyncWorker

            SyncWorker(client).create("workers-1")
        with httpx.Client(timeout=10) as client, client.stream(
                "GET", f"{gateway.url}/v1/jobs/workers-1",
                headers={"Accept": "text/event-stream"}) as response:
            chunks = response.iter_bytes()
            assert b"event: snapshot" in next(chunks)
            process.send_signal(signal.SIGTERM)
            rest = b"".join(chunks)
        assert re.search(rb"retry: \d+\n\n$", rest), rest
        assert process.wait(20) == 0, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        # Each worker process logs as gateway serve does: JSON lines, the access line too.
        lines = process.stderr.read().decode().splitlines()  # type: ignore[union-attr]
        logged = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(logged) == len(lines), lines
        assert any(entry["logger"] == "gateway.access" and "/v1/jobs/workers-1" in
                   json.dumps(entry) for entry in logged), lines
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone when all went well
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def test_workers_that_cannot_start_stop_the_command_with_exit_3(redis_url: str,
                                                               tmp_path) -> None:
    # Only the worker processes (spawned interpreters) see a public address with no key:
    # their app refuses to start, as a single process's would.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if '--multiprocessing-fork' in sys.argv:\n"
        "    os.environ.update(GATEWAY_HOST='0.0.0.0', GATEWAY_INSECURE='false')\n")
    result = serve("--port", str(free_port()), "--workers", "2", redis_url=redis_url,
                   PYTHONPATH=str(tmp_path))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "not a loopback address" in result.stderr


def test_the_start_says_where_the_dashboard_is(gateway) -> None:
    assert f'"msg": "the dashboard: {gateway.url}/ ' in gateway.output()


def test_a_port_out_of_range_is_refused_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", "70000"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "gateway: port 70000 is no TCP port: choose one from 1 to 65535"
