"""Event ids and channel messages (docs/api.md, Event streams; docs/workers.md).

A message published by the update script is parsed once, and its frame built once; the
same bytes go to every watcher. Every event a stream sends is a Message made here: parsed
from a channel, read from a record, or a job's deletion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from starlette.types import Message as AsgiMessage

from gateway.contract import frames
from gateway.contract.record import TERMINAL, Record, Status, status_of

# docs/api.md, Event streams: `<epoch>-<seq>`, epoch of 6-16 characters [a-z0-9].
_EVENT_ID = re.compile(r"([a-z0-9]{6,16})-([0-9]{1,19})")
# A channel message's header line, as update.lua writes it: event id, event, version,
# status, publish time (microseconds), job id.
_HEADER = re.compile(
    r"([a-z0-9]{6,16})-([0-9]{1,18}) (status|progress|deleted) ([0-9]{1,18}) "
    r"(queued|running|completed|failed|canceled) ([0-9]{1,18}) ([A-Za-z0-9_-]{1,128})")


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


class Message:
    """One accepted change as published on a channel, with its frame encoded once."""

    __slots__ = ("_bodies", "_relabelled", "data", "epoch", "event", "event_id", "frame",
                 "job_id", "published_us", "seq", "status", "terminal", "version")

    def __init__(
        self,
        *,
        epoch: str,
        seq: int,
        event: str,
        version: int | None,
        status: Status | None,
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
        self.terminal = event == "deleted" or status in TERMINAL
        self.published_us = published_us
        self.job_id = job_id
        self.data = data
        self.frame = frames.event(self.event_id, event.encode(), data)
        self._bodies: tuple[AsgiMessage, AsgiMessage] | None = None
        self._relabelled: bytes | None = None

    @classmethod
    def parse(cls, payload: bytes) -> Message:
        """Raises ValueError for anything that is not a well-formed gateway message.

        The format is update.lua's: a header line ``<epoch>-<seq> <event> <version>
        <status> <publish_us> <job_id>``, a newline, then the event's data line.
        """
        header, sep, data = payload.partition(b"\n")
        # Every field is checked, so that nothing a stranger publishes on a gateway channel
        # reaches a client or raises further on: one JSON line of data (no line break of
        # any kind), and a header of exactly update.lua's shape.
        if not sep or not data.startswith(b"{") or b"\n" in data or b"\r" in data:
            raise ValueError("not a gateway message")
        match = _HEADER.fullmatch(header.decode("latin-1"))
        if match is None:
            raise ValueError("not a gateway message")
        epoch, seq, event, version, status, published_us, job_id = match.groups()
        if event == "deleted":
            return cls.deleted(epoch, int(seq), job_id, int(version))
        return cls(
            epoch=epoch,
            seq=int(seq),
            event=event,
            version=int(version),
            status=status_of(status),
            job_id=job_id,
            data=data,
            published_us=int(published_us),
        )

    @classmethod
    def from_record(cls, record: Record, event: str) -> Message:
        """The job's current snapshot as ``event`` (an opening, a resume, a resync)."""
        return cls(epoch=record.epoch, seq=record.seq, event=event, version=record.version,
                   status=record.status, job_id=record.job_id, data=record.body())

    @classmethod
    def deleted(cls, epoch: str, seq: int, job_id: str, version: int | None) -> Message:
        """The deletion of a job at ``seq``: the one way a ``deleted`` event is made.

        Published by the update script, it carries the deletion's version; found later
        from the tenant index (a resume, a resync), the version is gone with the record
        and the data says null (docs/api.md, Event streams). Streams order it by its seq.
        """
        data = json.dumps({"job_id": job_id, "version": version},
                          separators=(",", ":")).encode()
        return cls(epoch=epoch, seq=seq, event="deleted", version=version, status=None,
                   job_id=job_id, data=data)

    def body(self, final: bool) -> AsgiMessage:
        """The ASGI ``http.response.body`` message of this frame, built once per message.

        A fan-out hands the same dict to every watcher's ``send``: servers read it and
        keep nothing (uvicorn, hypercorn); docs/architecture.md says what it saves.
        """
        if self._bodies is None:
            self._bodies = (frames.body(self.frame, more=True),
                            frames.body(self.frame, more=False))
        return self._bodies[final]

    def relabelled(self) -> bytes:
        """This message's frame as ``status``: for a client that skipped the status
        change (conflation, a resync). Built once, whatever the number of such clients."""
        if self._relabelled is None:
            self._relabelled = frames.event(self.event_id, b"status", self.data)
        return self._relabelled

    def as_event(self, event: str) -> Message:
        return Message(epoch=self.epoch, seq=self.seq, event=event, version=self.version,
                       status=self.status, job_id=self.job_id, data=self.data,
                       published_us=self.published_us)
