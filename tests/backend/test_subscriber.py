"""The pub/sub connection's own loop (gateway.backend.subscriber), against real sockets."""

from __future__ import annotations

import logging

import anyio
import pytest

from gateway.backend import subscriber
from gateway.backend.subscriber import Subscriber
from gateway.embedded import free_port

pytestmark = pytest.mark.anyio


class _Listener:
    def on_lost(self, channels: object) -> None: ...
    def on_restored(self, channels: object) -> None: ...


async def _nothing(channel: str, message: bytes) -> None: ...


async def test_an_unreachable_redis_is_said_once_per_backoff_step(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Steps of 0.05, 0.1 and 0.2 s, then 0.2 s for ever: about ten attempts in 2 s.
    monkeypatch.setattr(subscriber, "_MAX_BACKOFF", 0.2)
    caplog.set_level(logging.WARNING, logger="gateway.backend")
    sub = Subscriber(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1,
                     probe_seconds=60, publish=_nothing)  # type: ignore[arg-type]
    with anyio.move_on_after(2):
        await sub.run(_Listener())  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records if "pub/sub connection" in r.getMessage()]
    assert [line.rsplit("retrying in ", 1)[1] for line in said] == ["0.05s", "0.10s", "0.20s"]
