"""The pipelined request reads: one shared connection, bounded waits, one retry."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
import redis

from gateway.backend.reads import Reads
from gateway.embedded import EmbeddedRedis, free_port
from gateway.errors import BackendUnavailable

pytestmark = pytest.mark.anyio


def reads_clients(r: redis.Redis) -> list[dict[str, str]]:
    return [c for c in r.client_list() if c["name"] == f"gateway-reads-{os.getpid()}"]


async def test_concurrent_reads_share_one_connection(redis_url: str, r: redis.Redis) -> None:
    r.set("k", "v")
    async with Reads(redis_url, timeout=2) as reads:
        results = await asyncio.gather(*(reads.request("GET", "k") for _ in range(50)))
        assert results == [b"v"] * 50
        assert await reads.request_many([("GET", "k"), ("EXISTS", "k")]) == [b"v", 1]
        assert len(reads_clients(r)) == 1
    for _ in range(500):  # the server sees the close a moment later
        if not reads_clients(r):
            break
        await asyncio.sleep(0.01)
    assert reads_clients(r) == []


async def test_a_refused_read_is_backend_unavailable(redis_url: str, r: redis.Redis) -> None:
    r.set("k", "v")
    async with Reads(redis_url, timeout=2) as reads:
        with pytest.raises(BackendUnavailable, match="WRONGTYPE"):
            await reads.request_many([("GET", "k"), ("HGET", "k", "f")])
        assert await reads.request("GET", "k") == b"v"


async def test_a_stale_connection_is_replaced_and_the_read_retried_once(
    redis_url: str, r: redis.Redis
) -> None:
    r.set("k", "v")
    async with Reads(redis_url, timeout=2) as reads:
        assert await reads.request("GET", "k") == b"v"
        killed = r.client_kill_filter(_id=int(reads_clients(r)[0]["id"]))
        assert killed == 1
        await asyncio.sleep(0.05)
        assert await reads.request("GET", "k") == b"v"  # no error reached the caller


async def test_a_silent_redis_costs_one_bounded_wait_then_reads_reconnect(
    redis_url: str, r: redis.Redis
) -> None:
    r.set("k", "v")
    async with Reads(redis_url, timeout=0.2) as reads:
        assert await reads.request("GET", "k") == b"v"
        first = reads_clients(r)[0]["id"]
        r.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        try:
            with pytest.raises(BackendUnavailable, match="in time"):
                await reads.request("GET", "k")
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        assert await reads.request("GET", "k") == b"v"
        assert [c["id"] for c in reads_clients(r)] != [first]


async def test_no_redis_at_all_is_backend_unavailable_in_time() -> None:
    async with Reads(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5) as reads:
        with pytest.raises(BackendUnavailable):
            await reads.request("GET", "k")


async def test_reads_come_back_with_redis() -> None:
    with EmbeddedRedis() as server:
        async with Reads(server.url, timeout=0.5) as reads:
            assert await reads.request("PING") == b"PONG"
            server.stop()
            with pytest.raises(BackendUnavailable):
                await reads.request("PING")
            server.start()
            assert await reads.request("PING") == b"PONG"


async def test_a_refused_read_is_logged_once_while_it_repeats(
    redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r.execute_command("ACL", "SETUSER", "reader", "reset", "on", ">pw", "~*", "+ping", "+get",
                      "+client|setname")
    try:
        url = redis_url.replace("redis://", "redis://reader:pw@")
        with caplog.at_level(logging.ERROR, logger="gateway.backend"):
            async with Reads(url, timeout=2) as reads:
                for _ in range(3):
                    with pytest.raises(BackendUnavailable, match="NOPERM"):
                        await reads.request("ZCARD", "k")
                assert await reads.request("GET", "k") is None  # the connection is fine
        logged = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.backend"]
        assert len(logged) == 1, logged
        assert "NOPERM" in logged[0] and "Redis permissions" in logged[0]
    finally:
        r.execute_command("ACL", "DELUSER", "reader")
