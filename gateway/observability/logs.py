"""Structured logs: one JSON object per line (docs/operations.md, Logs).

Every logger (the access log of gateway.observability.access, the backend's reconnects,
uvicorn's errors) goes through the same formatter when ``gateway serve`` runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any

from gateway.observability import access
from gateway.observability.access import access_log

_STANDARD = {*vars(logging.makeLogRecord({})), "color_message"}  # uvicorn adds color_message


class JsonFormatter(logging.Formatter):
    """One JSON object per record. It runs once per request (the access log), so the
    encoder is made once and the timestamp's seconds are formatted once per second."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = json.JSONEncoder(default=str)
        self._stamp = (-1, "")  # (second, its text): one tuple, so threads see a pair

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in record.__dict__.items()
                  if key not in _STANDARD}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return self.line(record.created, int(record.msecs), record.levelname.lower(),
                         record.name, record.getMessage(), fields)

    def line(self, created: float, msecs: int, level: str, logger: str, msg: str,
             fields: dict[str, Any]) -> str:
        """The one JSON line of a record, whether it came through ``logging`` or straight
        from the access log (``AccessSink``)."""
        second, text = self._stamp
        if int(created) != second:
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, text)
        entry: dict[str, Any] = {
            "ts": f"{text}.{msecs:03d}Z",
            "level": level,
            "logger": logger,
            "msg": msg,
        }
        entry.update(fields)
        return self._encoder.encode(entry)


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes access lines in batches, everything else at once.

    The access log writes a line per request, and a write() system call per line costs
    more than the line (docs/architecture.md). Its lines wait here at most
    ``interval`` seconds (a daemon thread flushes them) or until 256 are waiting; any other
    record flushes them first and goes out with them, so order is kept and warnings are
    never late. logging.shutdown() flushes what is left at exit.
    """

    def __init__(self, stream: Any, *, batched: str, interval: float = 0.1) -> None:
        super().__init__(stream)
        self._batched = batched
        self._lines: list[str] = []
        self._interval = interval
        self._flusher: threading.Thread | None = None
        _BATCHED.add(self)

    def _forked(self) -> None:
        # A forked child has no thread but the one that forked, and the parent writes the
        # lines that were waiting; the child starts its own flusher when it first logs
        # (not now: a fork that execs at once, as subprocess does, should start nothing).
        self._lines = []
        self._flusher = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with self.lock held (Handler.handle).
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line, batched=record.name == self._batched)

    def add_batched(self, line: str) -> None:
        """A line of the batched logger, formatted already (``AccessSink``)."""
        self.acquire()
        try:
            self._add(line, batched=True)
        finally:
            self.release()

    def _add(self, line: str, *, batched: bool) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="log-flush", daemon=True)
            self._flusher.start()
        self._lines.append(line + self.terminator)
        if not batched or len(self._lines) >= 256:
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._lines:
                lines, self._lines = self._lines, []
                try:
                    self.stream.write("".join(lines))
                except Exception:  # a closed or broken stream loses lines, not the server
                    return
            super().flush()
        finally:
            self.release()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self._interval)
            if self._lines:
                self.flush()


class AccessSink:
    """The access log's way around ``logging``'s machinery, once ``configure`` set it up.

    An access line through ``Logger.info`` pays for a LogRecord of some thirty attributes,
    the logger's and handler's checks and the formatter's walk over the record, once per
    request and once per stream: a quarter of that line's cost goes (docs/architecture.md
    has the figures). The line is the same, built by the same
    formatter (``JsonFormatter.line``) and written by the same handler, in order with
    every other record. It is used only while logging is as ``configure`` left it (the
    root's one handler, no handler or filter on the access logger); otherwise the access
    log goes through ``logging`` as any other logger.
    """

    def __init__(self, handler: BatchedStreamHandler, formatter: JsonFormatter) -> None:
        self._handler = handler
        self._formatter = formatter

    def usable(self) -> bool:
        handler, handlers = self._handler, logging.root.handlers
        if not (len(handlers) == 1 and handlers[0] is handler and not handler.filters
                and handler.formatter is self._formatter and handler.level <= logging.INFO):
            return False
        logger: logging.Logger | None = access_log
        while logger is not None and logger is not logging.root:  # gateway.access, gateway
            if logger.handlers or logger.filters or not logger.propagate:
                return False
            logger = logger.parent
        return True

    def write(self, msg: str, fields: dict[str, Any]) -> bool:
        """False when the line could not be made: then it goes through ``logging``, whose
        handler reports the error as it reports any."""
        now = time.time()
        try:
            line = self._formatter.line(now, int((now - int(now)) * 1000), "info",
                                        access_log.name, msg, fields)
        except Exception:
            return False
        self._handler.add_batched(line)
        return True


_BATCHED: weakref.WeakSet[BatchedStreamHandler] = weakref.WeakSet()


def _after_fork() -> None:
    for handler in list(_BATCHED):
        handler._forked()


os.register_at_fork(after_in_child=_after_fork)


def configure(level: str) -> None:
    # Nothing here logs the process, the thread or the caller's file and line, and the
    # access log runs once per request: skip collecting them (the logging HOWTO's
    # "Optimization"; the process id alone is a getpid() system call per record, and the
    # caller is found by walking the stack).
    logging._srcfile = None
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler(sys.stderr, batched=access_log.name)
    formatter = JsonFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    access.use_sink(AccessSink(handler, formatter))
    root.setLevel(logging.DEBUG if level == "trace" else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The access log is ours (with request ids and redaction); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
