"""``gateway keys``, the start-up refusal on a public address, and the body limit
(docs/api.md, Auth)."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time

import httpx
import redis

from gateway.auth import apikeys
from gateway.contract import keys
from gateway.embedded import free_port


def gateway_command(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )


def test_a_key_is_printed_once_and_only_its_hash_is_kept(redis_url: str, r: redis.Redis) -> None:
    made = gateway_command(redis_url, "keys", "create", "--tenant", "acme", "--scope", "read",
                           "--name", "dashboard")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"  # the key and nothing else
    key_id = apikeys.key_id_of(key)
    assert key_id is not None
    stored = r.hgetall(keys.api_keys_key())
    assert key.encode() not in b"".join(stored.values())
    assert json.loads(stored[key_id.encode()])["hash"] == apikeys.digest(key)

    as_json = gateway_command(redis_url, "keys", "create", "--tenant", "globex", "--scope",
                              "write", "--json")
    other = json.loads(as_json.stdout)
    assert set(other) == {"key", "key_id", "tenant", "scope"}
    assert (other["tenant"], other["scope"]) == ("globex", "write")

    listed = json.loads(gateway_command(redis_url, "keys", "list", "--json").stdout)
    assert [(k["key_id"], k["tenant"], k["scope"], k["name"]) for k in listed] == [
        (key_id, "acme", "read", "dashboard"), (other["key_id"], "globex", "write", "")]
    assert all(k["last_used_at"] is None and k["revoked_at"] is None for k in listed)
    table = gateway_command(redis_url, "keys", "list", "--tenant", "acme")
    assert key_id in table.stdout and other["key_id"] not in table.stdout
    assert key not in table.stdout

    revoked = gateway_command(redis_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0
    listed = json.loads(gateway_command(redis_url, "keys", "list", "--json").stdout)
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    assert revoked.stdout.startswith(f"revoked {key_id}")
    missing = gateway_command(redis_url, "keys", "revoke", "000000000000")
    assert missing.returncode == 1 and "no key" in missing.stderr


def test_listing_no_keys_says_so(redis_url: str) -> None:
    """Found by a new user: the table of no keys crashed."""
    for args in ([], ["--tenant", "nobody"]):
        listed = gateway_command(redis_url, "keys", "list", *args)
        assert listed.returncode == 0 and listed.stdout == ""
        assert "no API key" in listed.stderr


def test_bad_key_requests_are_refused_clearly(redis_url: str) -> None:
    for args, says in [
        (["--tenant", "Acme Corp", "--scope", "read"], "tenant"),
        (["--tenant", "{x}", "--scope", "read"], "tenant"),
        (["--tenant", "acme", "--scope", "admin"], "invalid choice"),
    ]:
        refused = gateway_command(redis_url, "keys", "create", *args)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    unset = subprocess.run([sys.executable, "-m", "gateway", "keys", "list"],
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           timeout=30)
    assert unset.returncode == 2 and "REDIS_URL" in unset.stderr


def test_gateway_job_takes_a_tenant(redis_url: str, r: redis.Redis) -> None:
    made = gateway_command(redis_url, "job", "create", "t1", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    assert r.exists(keys.job_key("acme", "t1")) and not r.exists(keys.job_key("default", "t1"))
    bad = gateway_command(redis_url, "job", "create", "t2", "--tenant", "A}")
    assert bad.returncode == 2 and "tenant" in bad.stderr


def test_a_public_address_without_a_key_is_refused_at_start(redis_url: str) -> None:
    started = time.monotonic()
    refused = gateway_command(redis_url, "serve", "--host", "0.0.0.0", "--port",
                              str(free_port()))
    assert refused.returncode == 2
    # One plain line, as for a bad setting (a new user found it inside a traceback).
    assert refused.stderr.startswith("gateway: refusing to start: no API key exists, and "
                                     "0.0.0.0 is not a loopback address")
    assert "gateway keys create" in refused.stderr and "--insecure" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert time.monotonic() - started < 20


def test_under_plain_uvicorn_the_app_refuses_too(redis_url: str) -> None:
    """The app checks again once it has read the keys: under plain uvicorn, GATEWAY_HOST
    says where it is served (uvicorn starts the app before it binds its socket)."""
    refused = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app", "--port",
         str(free_port())],
        env={"REDIS_URL": redis_url, "GATEWAY_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "not a loopback address" in refused.stdout + refused.stderr


def _post_large(url: str, path: str, head: str, chunk: bytes, most: int) -> tuple[bytes, int]:
    """Send a request and then its body, chunk by chunk, until the answer comes; returns
    the answer's first bytes and how much of the body was sent."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                return _answer(sock), sent
            if sent < most:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
                sent += len(chunk)
            else:
                time.sleep(0.01)
        return _answer(sock), sent


def _answer(sock: socket.socket) -> bytes:
    """The response, read until the server closes the connection or 2 s pass."""
    sock.settimeout(2)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer


def test_a_10_mb_body_gets_413_without_being_read(start_gateway) -> None:
    gateway = start_gateway()
    ten_mb = 10 * 1024 * 1024
    started = time.monotonic()
    answer, sent = _post_large(gateway.url, "/v1/jobs",
                               f"Content-Type: application/json\r\nContent-Length: {ten_mb}\r\n",
                               b" " * 16384, ten_mb)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"request.too_large"' in answer
    # What was sent before the answer came is what the kernels' buffers took (a few MB
    # on loopback), not what the gateway read.
    assert sent < ten_mb and time.monotonic() - started < 5
    # Also on a route that reads no body, and for a body sent in chunks without a length.
    answer, _ = _post_large(gateway.url, "/v1/jobs/x/cancel",
                            f"Content-Length: {ten_mb}\r\n", b" " * 16384, ten_mb)
    assert answer.startswith(b"HTTP/1.1 413")
    chunk = b"4000\r\n" + b" " * 16384 + b"\r\n"
    answer, sent = _post_large(gateway.url, "/v1/jobs", "Transfer-Encoding: chunked\r\n",
                               chunk, ten_mb)
    assert answer.startswith(b"HTTP/1.1 413") and sent < ten_mb
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
