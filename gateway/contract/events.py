"""Event ids, channel messages and SSE frames (DESIGN.md sections 3 and 4).

A message published by the update script is turned into an SSE frame exactly once; the
same bytes go to every watcher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TERMINAL = frozenset({"completed", "failed", "canceled"})

HEARTBEAT = b": keepalive\n\n"

# DESIGN.md section 3: `<epoch>-<seq>`, epoch of 6-16 characters [a-z0-9].
_EVENT_ID = re.compile(r"([a-z0-9]{6,16})-([0-9]{1,19})")


@dataclass(frozen=True, slots=True)
class EventId:
    epoch: str
    seq: int

    @classmethod
    def parse(cls, raw: str | None) -> EventId | None:
        """The id, or None for anything malformed: such an id is treated as absent."""
        if not raw:
            return None
        match = _EVENT_ID.fullmatch(raw.strip())
        if match is None:
            return None
        return cls(match[1], int(match[2]))

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"


def retry_frame(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def frame(event_id: bytes, event: bytes, data: bytes) -> bytes:
    # `data` is one JSON line (the update script never writes a newline into it).
    return b"id: " + event_id + b"\nevent: " + event + b"\ndata: " + data + b"\n\n"


class Message:
    """One accepted change as published on a channel, with its frame encoded once."""

    __slots__ = ("_bodies", "data", "epoch", "event", "event_id", "frame", "job_id",
                 "published_us", "seq", "status", "terminal", "version")

    def __init__(
        self,
        *,
        epoch: str,
        seq: int,
        event: str,
        version: int,
        status: str,
        job_id: str,
        data: bytes,
        published_us: int = 0,
    ) -> None:
        self.epoch = epoch
        self.seq = seq
        self.event_id = f"{epoch}-{seq}".encode()
        self.event = event
        self.version = version
        self.status = status
        self.terminal = status in TERMINAL or event == "deleted"
        self.published_us = published_us
        self.job_id = job_id
        self.data = data
        self.frame = frame(self.event_id, event.encode(), data)
        self._bodies: tuple[dict[str, Any], dict[str, Any]] | None = None

    @classmethod
    def parse(cls, payload: bytes) -> Message:
        """Raises ValueError for anything that is not a well-formed gateway message."""
        header, sep, data = payload.partition(b"\n")
        if not sep or not data.startswith(b"{") or b"\n" in data:
            raise ValueError("not a gateway message")
        event_id, event, version, status, published_us, job_id = header.decode().split(" ")
        epoch, dash, seq = event_id.partition("-")
        if not dash:
            raise ValueError("not a gateway message")
        return cls(
            epoch=epoch,
            seq=int(seq),
            event=event,
            version=int(version),
            status=status,
            job_id=job_id,
            data=data,
            published_us=int(published_us),
        )

    def body(self, final: bool) -> dict[str, Any]:
        """The ASGI ``http.response.body`` message of this frame, built once per message.

        A fan-out hands the same dict to every watcher's ``send``: servers read it and
        keep nothing (uvicorn, hypercorn), and one dict per watcher was a seventh of the
        per-watcher cost of a fan-out.
        """
        if self._bodies is None:
            self._bodies = (
                {"type": "http.response.body", "body": self.frame, "more_body": True},
                {"type": "http.response.body", "body": self.frame, "more_body": False},
            )
        return self._bodies[final]

    def relabelled(self, event: str) -> bytes:
        """This message's frame under another event name (conflation, see Watcher)."""
        return frame(self.event_id, event.encode(), self.data)

    def as_event(self, event: str) -> Message:
        return Message(epoch=self.epoch, seq=self.seq, event=event, version=self.version,
                       status=self.status, job_id=self.job_id, data=self.data,
                       published_us=self.published_us)
