"""A job as the update script stores it (docs/api.md, The job snapshot; docs/workers.md)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})

# A plain dict: Status(value) goes through EnumMeta.__call__, which costs ten times more,
# and every channel message names a status.
_STATUSES = {status.value: status for status in Status}


def status_of(value: str) -> Status:
    """The Status named ``value``; ValueError for anything else."""
    try:
        return _STATUSES[value]
    except KeyError:
        raise ValueError(f"not a job status: {value[:40]!r}") from None


def _utf8(raw: bytes) -> bytes:
    """The snapshot as valid UTF-8: the update script refuses anything else, but a record
    written before it did, or by hand, must not make a response invalid JSON."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").encode("utf-8")
    return raw


def rfc3339(at: float, *, millis: bool = False) -> str:
    """A time as the contract writes every time: RFC 3339 UTC with ``Z``."""
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    return f"{text}.{int(at * 1000) % 1000:03d}Z" if millis else f"{text}Z"


def etag(event_id: str, *, expired: bool = False) -> str:
    """The entity tag of a job's snapshot as of its change ``event_id`` (``<epoch>-<seq>``),
    marked when the output it names has expired (the body then says null)."""
    return f'"{event_id}-x"' if expired else f'"{event_id}"'


# The hash fields beside the snapshot JSON that the script writes, in the order that
# Record.from_fields reads them (update.lua's header comment documents each).
FIELDS = ("snapshot", "version", "seq", "epoch", "status", "status_seq", "output_expires")


@dataclass(frozen=True, slots=True)
class Record:
    """A job as stored: its snapshot JSON and what the gateway needs beside it."""

    job_id: str
    snapshot: bytes
    version: int
    seq: int
    epoch: str
    status: Status
    status_seq: int
    output_expires: float | None

    @classmethod
    def from_fields(cls, job_id: str, values: list[Any]) -> Record | None:
        """The record of an ``HMGET`` of FIELDS; None when the job does not exist."""
        if values[0] is None:
            return None
        snapshot, version, seq, epoch, status, status_seq, output_expires = (
            v.encode() if isinstance(v, str) else (v or b"") for v in values
        )
        return cls(
            job_id=job_id,
            snapshot=snapshot if snapshot.isascii() else _utf8(snapshot),
            version=int(version),
            seq=int(seq),
            epoch=epoch.decode(),
            status=status_of(status.decode()),
            status_seq=int(status_seq),
            output_expires=float(output_expires) if output_expires else None,
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def catch_up_event(self, seen_seq: int) -> str:
        """The event that brings a client who saw this job at ``seen_seq`` up to date
        (docs/api.md, Event streams): ``status`` when the status moved since, else ``progress``."""
        return "status" if self.status_seq > seen_seq else "progress"

    def output_expired(self, now: float) -> bool:
        return self.output_expires is not None and now >= self.output_expires

    def etag(self, now: float) -> str:
        """The entity tag of the snapshot as served at ``now``: it changes whenever the
        body does. The version alone does not: it starts again for a job deleted and
        created anew, and the body changes without a version when the output expires."""
        return etag(f"{self.epoch}-{self.seq}", expired=self.output_expired(now))

    def body(self, now: float | None = None) -> bytes:
        """The snapshot as served: ``output`` reads null once it expired (docs/api.md, The job
        snapshot)."""
        if self.output_expired(time.time() if now is None else now):
            try:
                document = json.loads(self.snapshot)
            except ValueError:  # not JSON at all (written by hand): served as it is
                return self.snapshot
            document["output"] = None
            return json.dumps(document, separators=(",", ":")).encode()
        return self.snapshot
