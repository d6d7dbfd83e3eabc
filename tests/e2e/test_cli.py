"""The ``gateway`` command: ``serve`` with an embedded server, ``job`` as a worker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import GatewayProcess, wait_ready


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _job(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "job", *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )


@pytest.fixture
def embedded_gateway():
    gateway = GatewayProcess(None)  # no REDIS_URL: the gateway starts its own server
    gateway.start()
    yield gateway
    gateway.stop()


def test_serve_without_redis_url_runs_an_embedded_server(embedded_gateway) -> None:
    match = re.search(r"REDIS_URL=(redis://127\.0\.0\.1:(\d+)/0)", embedded_gateway.output())
    assert match, embedded_gateway.output()
    url, port = match[1], int(match[2])

    created = _job(url, "create", "cli-1", "--source-format", "docx", "--target-format", "pdf")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["conversion"] == {"source_format": "docx",
                                                        "target_format": "pdf"}
    assert _job(url, "start", "cli-1", "--phase", "Loading").returncode == 0
    progress = _job(url, "progress", "cli-1", "40")
    progress_shown = json.loads(progress.stdout)["progress"]
    assert (progress_shown["percent"], progress_shown["phase"]) == (40.0, "Loading")
    snapshot = httpx.get(f"{embedded_gateway.url}/v1/jobs/cli-1").json()
    assert snapshot["version"] == 3

    refused = _job(url, "progress", "cli-1", "10")
    assert refused.returncode == 1
    assert "cli-1" in refused.stderr and "running" in refused.stderr

    assert embedded_gateway.terminate() == 0
    deadline = time.monotonic() + 10
    while _port_open(port):  # the embedded server stopped with the gateway
        assert time.monotonic() < deadline, "the embedded server outlived the gateway"
        time.sleep(0.05)


def test_sigterm_ends_open_streams_with_a_retry_and_exits(start_gateway, redis_url: str) -> None:
    # A grace far longer than the test may take: the streams must end on the signal, not
    # when the grace runs out.
    gateway = start_gateway(GATEWAY_SHUTDOWN_GRACE_SECONDS="600")
    assert _job(redis_url, "create", "term").returncode == 0
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=10))
        streams = []
        for _ in range(8):
            response = stack.enter_context(client.stream(
                "GET", f"{gateway.url}/v1/jobs/term", headers={"Accept": "text/event-stream"}))
            chunks = response.iter_bytes()
            assert b"event: snapshot" in next(chunks)
            streams.append(chunks)
        gateway.process.send_signal(15)
        tails = [b"".join(chunks) for chunks in streams]  # each ends when the server closes it
    retries = []
    for tail in tails:
        match = re.search(rb"retry: (\d+)\n\n$", tail)
        assert match, tail
        retries.append(int(match[1]))
    assert all(3000 <= retry <= 6000 for retry in retries), retries
    assert len(set(retries)) > 1, retries  # jittered: not one value for every client
    assert gateway.process.wait(15) == 0


def test_job_without_redis_url_explains() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "job", "start", "x"],
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "REDIS_URL" in result.stderr


@pytest.mark.parametrize("workers", [None, 2])
def test_plain_uvicorn_stops_streams_and_exits_0(redis_url: str, workers: int | None) -> None:
    from gateway.embedded import free_port

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app",
               "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(command, env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # a failed test kills its workers too
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        assert _job(redis_url, "create", "plain").returncode == 0
        with httpx.Client(timeout=10) as client, client.stream(
            "GET", f"{url}/v1/jobs/plain", headers={"Accept": "text/event-stream"}
        ) as response:
            chunks = response.iter_bytes()
            assert b"event: snapshot" in next(chunks)
            server.send_signal(15)
            rest = b"".join(chunks)
        assert re.search(rb"retry: \d+\n\n$", rest), rest
        assert server.wait(15) == 0, server.stderr.read().decode()[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone when all went well
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_the_embedded_server_dies_with_a_killed_gateway(embedded_gateway) -> None:
    port = int(re.search(r"REDIS_URL=redis://127\.0\.0\.1:(\d+)/0", embedded_gateway.output())[1])
    assert _port_open(port)
    embedded_gateway.process.kill()  # SIGKILL: no cleanup code runs
    embedded_gateway.process.wait(10)
    deadline = time.monotonic() + 10
    while _port_open(port):
        assert time.monotonic() < deadline, "the embedded server outlived a killed gateway"
        time.sleep(0.05)


def test_version_and_a_help_in_plain_words() -> None:
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True,
                           text=True, timeout=30)
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"gateway {version('job-status-gateway')}"
    helped = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True,
                            text=True, timeout=30)
    assert helped.returncode == 0 and "``" not in helped.stdout
    serve_help = subprocess.run([sys.executable, "-m", "gateway", "serve", "--help"],
                                capture_output=True, text=True, timeout=30).stdout
    assert "--workers N" in serve_help and "--embedded" in serve_help


@pytest.mark.parametrize("url,says", [
    ("nonsense", "must be a redis://, rediss:// or unix:// URL"),
    ("redis://127.0.0.1:{closed}/0", "cannot reach Redis"),
    ("{not_redis}", "does not speak the Redis protocol"),
])
def test_a_redis_url_that_cannot_work_is_one_line_and_exit_2(url: str, says: str) -> None:
    from gateway.embedded import free_port

    with socket.socket() as listening:  # answers as an HTTP server would, not as Redis
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        listening.settimeout(10)
        url = url.format(closed=free_port(),
                         not_redis=f"redis://127.0.0.1:{listening.getsockname()[1]}/0")
        command = subprocess.Popen([sys.executable, "-m", "gateway", "job", "create", "x"],
                                   env={"REDIS_URL": url, "PATH": "/usr/bin:/bin"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if "protocol" in says:
            peer, _ = listening.accept()
            with peer:
                peer.recv(1024)
                peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        _, err = command.communicate(timeout=30)
    assert command.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and says in err, err


def test_a_wrong_password_is_one_line_and_exit_2(redis_url: str, r) -> None:  # type: ignore[no-untyped-def]
    r.execute_command("ACL", "SETUSER", "cli-user", "on", ">right", "~*", "+@all", "&*")
    try:
        result = _job(redis_url.replace("redis://", "redis://cli-user:wrong@"), "create", "x")
    finally:
        r.execute_command("ACL", "DELUSER", "cli-user")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("gateway job: REDIS_URL: Redis refuses the credentials")
    assert len(result.stderr.strip().splitlines()) == 1


EXAMPLE = [sys.executable, "examples/worker.py"]


def test_the_example_worker_runs_twice_on_one_id_and_explains_a_missing_url(
    redis_url: str,
) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for _ in range(2):  # the second run makes the ended job afresh
        run = subprocess.run([*EXAMPLE, "twice"], cwd=root, env={"REDIS_URL": redis_url},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-1] == "job twice: completed (version 12)"
    missing = subprocess.run([*EXAMPLE, "x"], cwd=root, env={}, capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "examples/worker.py: set REDIS_URL to the Redis the gateway uses "
        "(`gateway serve` prints it)"]
