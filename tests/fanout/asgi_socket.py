"""An ASGI ``send`` that a test holds back by hand: a stand-in for a server's socket."""

from __future__ import annotations

import asyncio
from typing import Any


async def settle() -> None:
    """Let the event loop run what the test set in motion (callbacks, resumed writes)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Socket:
    """An ASGI send whose writes complete at once until ``fill()``, and wait from then
    until ``drain()``."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.more: list[bool] = []
        self.gate: asyncio.Future[None] | None = None

    def fill(self) -> None:
        self.gate = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.set_result(None)

    async def send(self, event: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate
        self.bodies.append(event["body"])
        self.more.append(event["more_body"])

    def events(self) -> list[tuple[str, str]]:
        out = []
        for body in self.bodies:
            if body.startswith(b"id: "):
                lines = body.decode().splitlines()
                out.append((lines[1].removeprefix("event: "), lines[0].removeprefix("id: ")))
        return out
