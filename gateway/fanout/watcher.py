"""One open event stream as the hub sees it: what it was sent, what waits, when it ends.

The hub hands every message of a watched channel to ``deliver``, straight from the
pub/sub connection's ``data_received``; the watcher decides whether the client needs it
(versions a client sees only go up, docs/api.md, Event streams) and writes its pre-encoded frame
through the hand-driven ASGI writer (gateway.fanout.writer). While a write waits for a
slow client, newer messages of the same job replace older ones (conflation), so a slow
client holds at most one pending message per job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Send

from gateway.contract import frames
from gateway.contract.events import Message
from gateway.contract.record import Status
from gateway.fanout.writer import AsgiWriter
from gateway.observability.metrics import STATS

# Ended jobs a stream that stays open remembers, most recent first (see Watcher._ended).
MAX_ENDED = 10_000

# What a stream remembers of each job it sent: the seq of that change and the job's
# status then. Not the message: a tenant-wide stream sees every job of its tenant.
Sent = tuple[int, Status | None]


class Watcher(AsgiWriter):
    """Per-stream state: the last message sent per job, pending messages, the write in flight.

    Every method runs on the event loop thread and never blocks.
    """

    __slots__ = ("_busy", "_end", "_ended", "_epoch", "_finishing", "_pending", "_sent",
                 "aborted", "close_on_terminal", "closed", "ends_at", "owner", "task")

    def __init__(self, send: Send, *, close_on_terminal: bool, owner: str | None = None,
                 ends_at: float | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 direct: Callable[[bytes], bool] | None = None) -> None:
        super().__init__(send, direct)
        # Who opened the stream (the credential's key: a revocation ends the streams it
        # owns), and the event loop time at which it ends with a `retry:` (its age limit,
        # or its token's expiry): the hub's timer ends it.
        self.owner = owner
        self.ends_at = ends_at
        # Busy from the start: the stream's own task writes the headers and the opening
        # snapshot, then calls release(). What the hub delivers meanwhile waits in _pending.
        self._busy = True
        self._pending: dict[str, Message] = {}
        self._sent: dict[str, Sent] = {}
        # Jobs that ended on a stream that stays open, with the seq of their end: forgotten
        # from _sent, so that a tenant-wide stream's memory follows the jobs still running.
        # Kept against older news of them (a resync, an opening race), up to MAX_ENDED:
        # past that the oldest ends are forgotten too.
        self._ended: dict[str, int] = {}
        # The epoch of what this stream has seen ("" before the first message).
        self._epoch = ""
        self._end: bytes | None = None
        self._finishing = False
        self.close_on_terminal = close_on_terminal
        self.closed = False
        self.aborted = False
        # The stream's own task, cancelled by abort(): ASGI has no other way to drop a
        # client that stopped reading. Given the loop, finding it needs no look-up of the
        # running loop (gateway.timers says why that matters once per stream).
        self.task = asyncio.current_task(loop)

    # -- called by the stream's own task ------------------------------------------------

    def mark_sent(self, message: Message) -> None:
        """Record what the stream task wrote itself (the opening snapshot)."""
        self._epoch = message.epoch
        self._sent[message.job_id] = (message.seq, message.status)

    def open_with(self, messages: list[Message]) -> None:
        """Queue a multi-job stream's opening snapshots with what the hub sent meanwhile.

        Per job the newer of the two wins (a job the client has not seen yet is labelled
        ``snapshot`` either way); then everything goes out in seq order, so that the id a
        client last saw is always a position it can resume from (docs/api.md, Event streams).
        """
        for message in messages:
            self._epoch = message.epoch
            waiting = self._pending.get(message.job_id)
            if waiting is not None and waiting.seq > message.seq:
                message = waiting if waiting.event == "deleted" else waiting.as_event("snapshot")
            self._pending[message.job_id] = message
        ordered = sorted(self._pending.values(), key=lambda m: m.seq)
        self._pending = {m.job_id: m for m in ordered}

    def reset_to(self, position: tuple[str, int]) -> None:
        """A multi-job stream that opens with a reset instead of snapshots: what it is sent
        from now on comes after ``position``; what came before is in the list its client
        reloads."""
        self._epoch = position[0]
        self._pending = {job_id: message for job_id, message in self._pending.items()
                         if message.seq > position[1]}

    def release(self) -> None:
        """The stream task is done writing: from now on the hub writes, pending first."""
        self._busy = False
        self._pump()

    def abort(self) -> None:
        """Drop a client whose write waited too long (the send timeout).

        Its task ends, the server closes the connection, and the client resumes with
        Last-Event-ID: nothing is lost, and its memory is released now.
        """
        if self.closed:
            return
        STATS.slow_disconnects += 1
        self.aborted = True
        self.discard()
        if self.task is not None:
            self.task.cancel()

    def discard(self) -> None:
        """The client left: drop everything and abandon a write in flight."""
        self.closed = True
        self._pending.clear()
        self.abandon()

    # -- called by the hub --------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        if self.closed or self._finishing:
            return
        if message.epoch != self._epoch:
            if self._epoch:
                # Redis lost its data (docs/api.md, Event streams): versions start again, which a
                # client must never see on one connection. It reconnects with its last id,
                # which is now foreign, and gets fresh snapshots.
                self.finish()
                return
            self._epoch = message.epoch
        last = self._sent.get(message.job_id)
        # Within an epoch a job's changes come in the order of their seq as of their
        # version; the seq also orders a deletion found gone, whose version is unknown.
        if last is None:
            if self._ended and self._ended.get(message.job_id, -1) >= message.seq:
                return  # the client saw this job end; this is older news
        elif message.seq <= last[0]:
            return  # already sent: versions a client sees only go up (docs/api.md, Event streams)
        if self._busy:
            waiting = self._pending.pop(message.job_id, None)
            if waiting is not None:
                STATS.conflated += 1
                if waiting.seq > message.seq:
                    message = waiting
            # Re-inserted at the end: pending stays in seq order, so the id a client saw
            # last never skips over a change still waiting to be sent.
            self._pending[message.job_id] = message
            return
        if self._write_message(message, last):
            self._after_write()

    def heartbeat(self) -> None:
        if self._busy or self.closed or self._finishing:
            return  # a stream busy writing needs no keepalive
        self._busy = True
        if self.write(frames.HEARTBEAT_BODY):
            self._pump()

    def finish(self, body: bytes = b"") -> None:
        """End the response after what is pending, with ``body`` last (shutdown)."""
        if self.closed or self._finishing or self._end is not None:
            return
        self._end = body
        if not self._busy:
            self._pump()

    # -- writing ------------------------------------------------------------------------

    def _write_message(self, message: Message, last: Sent | None) -> bool:
        """Start writing ``message``; True when the write is already done."""
        if message.terminal and not self.close_on_terminal:
            self._sent.pop(message.job_id, None)
            ended = self._ended
            ended.pop(message.job_id, None)
            ended[message.job_id] = message.seq
            if len(ended) > MAX_ENDED:
                del ended[next(iter(ended))]
        else:
            self._sent[message.job_id] = (message.seq, message.status)
        final = message.terminal and self.close_on_terminal
        if last is not None and last[1] != message.status and message.event == "progress":
            # The client skipped the status change (conflation or a resync): say it moved.
            frame = message.relabelled()
            body = frames.body(frame, more=not final)
        else:
            frame = message.frame
            body = message.body(final)
        self._busy = True
        STATS.events_sent += 1
        STATS.bytes_sent += len(frame)
        if final:
            self._finishing = True
        return self.write(body)

    def written(self) -> None:
        if not self.closed:
            self._after_write()

    def broken(self) -> None:
        self.closed = True
        self._pending.clear()

    def _after_write(self) -> None:
        if self._finishing:
            self.closed = True
        elif self._pending or self._end is not None:
            self._pump()
        else:
            self._busy = False  # what _pump would conclude, minus its checks (the hot path)

    def _pump(self) -> None:
        """Write what waits, oldest job first, until a write has to wait or nothing is left."""
        while not self.closed and not self.writing:
            if self._pending:
                job_id = next(iter(self._pending))
                message = self._pending.pop(job_id)
                last = self._sent.get(job_id)
                if last is not None and message.seq <= last[0]:
                    continue
                if not self._write_message(message, last):
                    return  # written() carries on once the write is done
                if self._finishing:
                    self.closed = True
                    return
                continue
            if self._end is not None:
                body, self._end = self._end, None
                self._finishing = True
                self._busy = True
                if self.write(frames.body(body, more=False)):
                    self.closed = True
                return
            self._busy = False
            return
