"""The RESP connection against a real Valkey: replies in order, errors, deadlines."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis

from gateway.backend.connection import RedisConnection, Refused, pack

pytestmark = pytest.mark.anyio


def unexpected(reply: object) -> None:
    raise AssertionError(f"a reply nobody waited for: {reply!r}")


def test_pack_is_resp() -> None:
    assert pack("GET", b"k\r\n") == b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n"


async def test_replies_come_back_in_order_and_an_error_reply_is_refused(redis_url: str) -> None:
    conn = await RedisConnection.open(redis_url, unexpected, name="t-conn")
    try:
        results = await asyncio.gather(
            conn.request("SET", "a", "1"), conn.request("GET", "a"), conn.request("PING"))
        assert results == [b"OK", b"1", b"PONG"]
        with pytest.raises(Refused, match="INCR refused by Redis"):
            await conn.request("INCR", "no such command here", "x")
        assert await conn.request("GET", "a") == b"1"  # a refusal keeps the connection
        replies = await conn.request_many(
            [("GET", "a"), ("HGET", "a", "f"), ("GET", "missing")], expire_after=2)
        assert replies[0] == b"1" and replies[2] is None
        assert isinstance(replies[1], Refused) and "WRONGTYPE" in str(replies[1])
    finally:
        conn.close()


async def test_it_authenticates_names_itself_and_selects_the_database(
    redis_url: str, r: redis.Redis
) -> None:
    r.execute_command("ACL", "SETUSER", "conn-user", "on", ">pw", "~*", "+@all", "&*")
    try:
        url = redis_url.replace("redis://", "redis://conn-user:pw@").rsplit("/", 1)[0] + "/5"
        conn = await RedisConnection.open(url, unexpected, name="t-named")
        try:
            await conn.request("SET", "in-five", "yes")
            assert await conn.request("ACL", "WHOAMI") == b"conn-user"
        finally:
            conn.close()
        with redis.Redis.from_url(url.replace("conn-user:pw@", "")) as five:
            assert five.get("in-five") == b"yes"
        assert r.get("in-five") is None
    finally:
        r.execute_command("ACL", "DELUSER", "conn-user")


async def test_a_password_alone_works_wherever_it_works_for_redis_py(
    redis_url: str, r: redis.Redis
) -> None:
    # The test server's default user takes any password (nopass), as many servers without
    # requirepass do: redis-py (the workers) connects with one, so the gateway must too.
    url = redis_url.replace("redis://", "redis://:any-password@")
    with redis.Redis.from_url(url) as worker_side:
        assert worker_side.ping()
    conn = await RedisConnection.open(url, unexpected, name="t-password")
    try:
        assert await conn.request("ACL", "WHOAMI") == b"default"
    finally:
        conn.close()
    r.execute_command("ACL", "SETUSER", "default", ">only-this")  # now a password is needed
    try:
        for wrong in (redis_url, redis_url.replace("redis://", "redis://:wrong@")):
            with pytest.raises(Refused, match=r"WRONGPASS|NOAUTH"):
                await RedisConnection.open(wrong, unexpected)
        right = redis_url.replace("redis://", "redis://:only-this@")
        (await RedisConnection.open(right, unexpected)).close()
        # A user without a password (nopass), named with no password in the URL.
        r.execute_command("ACL", "SETUSER", "nopass-user", "on", "nopass", "~*", "+@all", "&*")
        named = redis_url.replace("redis://", "redis://nopass-user@")
        with redis.Redis.from_url(named) as worker_side:
            assert worker_side.ping()
        conn = await RedisConnection.open(named, unexpected)
        try:
            assert await conn.request("ACL", "WHOAMI") == b"nopass-user"
        finally:
            conn.close()
    finally:
        r.execute_command("ACL", "SETUSER", "default", "resetpass", "nopass")
        r.execute_command("ACL", "DELUSER", "nopass-user")


async def test_a_reply_that_does_not_come_in_time_is_a_timeout(
    redis_url: str, r: redis.Redis
) -> None:
    conn = await RedisConnection.open(redis_url, unexpected, name="t-slow")
    try:
        r.execute_command("CLIENT", "PAUSE", "600", "ALL")  # Redis stops answering
        with pytest.raises(TimeoutError):
            await conn.request("GET", "a", expire_after=0.1)
        with pytest.raises(TimeoutError):
            await conn.request_many([("GET", "a"), ("GET", "b")], expire_after=0.1)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
        conn.close()


async def test_a_closed_connection_fails_what_waits_and_says_so(
    redis_url: str, r: redis.Redis
) -> None:
    conn = await RedisConnection.open(redis_url, unexpected, name=f"t-killed-{os.getpid()}")
    waiting = asyncio.ensure_future(conn.request("BLPOP", "never", "0"))
    await asyncio.sleep(0.05)
    assert r.client_kill_filter(_type="normal", skipme=True) >= 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 5)
    assert isinstance(await asyncio.wait_for(conn.closed, 5), Exception)
    assert not conn.usable
    with pytest.raises(ConnectionError):
        await conn.request("PING")


async def test_replies_nobody_waits_for_go_to_the_callback(redis_url: str, r: redis.Redis) -> None:
    pushed: list[object] = []
    conn = await RedisConnection.open(redis_url, pushed.append, name="t-pubsub")
    try:
        conn.send("SUBSCRIBE", "t-channel")
        for _ in range(100):
            if pushed:
                break
            await asyncio.sleep(0.01)
        r.publish("t-channel", "hello")
        for _ in range(100):
            if len(pushed) == 2:
                break
            await asyncio.sleep(0.01)
        assert pushed == [[b"subscribe", b"t-channel", 1], [b"message", b"t-channel", b"hello"]]
    finally:
        conn.close()


async def test_a_connection_can_stop_reading_for_one_turn_of_the_loop(redis_url: str) -> None:
    conn = await RedisConnection.open(redis_url, unexpected, name="t-turn")
    try:
        transport = conn._transport
        assert transport is not None and transport.is_reading()
        conn.pause_for_a_turn()
        assert not transport.is_reading()
        await asyncio.sleep(0)
        assert transport.is_reading()
        assert await conn.request("PING") == b"PONG"
    finally:
        conn.close()
