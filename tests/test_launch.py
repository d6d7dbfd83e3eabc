"""``gateway serve``'s start and stop (gateway.launch), run as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

from gateway.embedded import free_port


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
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
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
