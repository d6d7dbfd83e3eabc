"""The hand-driven ASGI writer: every way a server's ``send`` can behave."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from gateway.fanout.writer import AsgiWriter

pytestmark = pytest.mark.anyio


class Recorder(AsgiWriter):
    __slots__ = ("events",)

    def __init__(self, send: Any) -> None:
        super().__init__(send)
        self.events: list[str] = []

    def written(self) -> None:
        self.events.append("written")

    def broken(self) -> None:
        self.events.append("broken")


async def test_a_send_that_completes_at_once_is_done_in_the_call() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    writer = Recorder(send)
    assert writer.write({"n": 1}) is True
    assert sent == [{"n": 1}] and writer.events == [] and not writer.writing
    assert writer.waiting_since is None


async def test_a_send_waiting_on_a_future_is_resumed_by_its_callback() -> None:
    room = asyncio.get_running_loop().create_future()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        await room
        sent.append(message)

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    assert writer.writing and writer.waiting_since is not None and sent == []
    room.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sent == [{"n": 1}] and writer.events == ["written"]
    assert not writer.writing and writer.waiting_since is None


async def test_a_send_that_yields_bare_is_run_again_soon() -> None:
    class Yield:
        def __await__(self) -> Generator[None, None, None]:
            yield None  # what asyncio.sleep(0) does

    sent: list[Any] = []

    async def send(message: Any) -> None:
        await Yield()
        sent.append(message)

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    for _ in range(3):
        await asyncio.sleep(0)
    assert sent == [{"n": 1}] and writer.events == ["written"]


async def test_a_send_that_is_no_coroutine_is_driven_through_its_iterator() -> None:
    done = asyncio.get_running_loop().create_future()

    def send(message: Any) -> asyncio.Future[None]:
        return done  # an awaitable, not a coroutine

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    done.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert writer.events == ["written"]


async def test_a_refused_send_reports_the_broken_connection() -> None:
    async def send(message: Any) -> None:
        raise OSError("the connection is gone")

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    assert writer.events == ["broken"] and not writer.writing


async def test_a_send_refused_after_waiting_reports_it_too() -> None:
    room = asyncio.get_running_loop().create_future()

    async def send(message: Any) -> None:
        await room
        raise OSError("reset while waiting")

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    room.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert writer.events == ["broken"]


async def test_an_abandoned_write_is_closed_and_never_resumed() -> None:
    room = asyncio.get_running_loop().create_future()
    closed: list[bool] = []

    async def send(message: Any) -> None:
        try:
            await room
        except GeneratorExit:
            closed.append(True)
            raise

    writer = Recorder(send)
    assert writer.write({"n": 1}) is False
    writer.abandon()
    assert closed == [True] and not writer.writing
    room.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert writer.events == []
