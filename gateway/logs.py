"""Structured logs: one JSON object per line, with a request id, secrets redacted (issue 4).

The access log is written by ``AccessLog``; other loggers (the hub's reconnects, uvicorn's
errors) go through the same formatter when ``gateway serve`` runs.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from gateway.negotiation import Representation, negotiate

access_log = logging.getLogger("gateway.access")

# Query parameters whose values never reach a log: API keys, tokens, presigned signatures.
_SECRET = re.compile(r"key|token|secret|password|passwd|signature|sig|auth|credential", re.I)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_STANDARD = {*vars(logging.makeLogRecord({})), "color_message"}  # uvicorn adds color_message


def redact_query(query: str) -> str:
    if not _SECRET.search(query):
        return query  # nothing that could name a secret (the common case, cheaply)
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "REDACTED" if _SECRET.search(k) else v) for k, v in pairs])


class JsonFormatter(logging.Formatter):
    """One JSON object per record. It runs once per request (the access log), so the
    encoder is made once and the timestamp's seconds are formatted once per second."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = json.JSONEncoder(default=str)
        self._stamp = (-1, "")  # (second, its text): one tuple, so threads see a pair

    def format(self, record: logging.LogRecord) -> str:
        second, text = self._stamp
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, text)
        entry: dict[str, Any] = {
            "ts": f"{text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry)


def configure(level: str) -> None:
    # Nothing here logs the process or thread, and the access log runs once per request:
    # skip collecting them (the logging HOWTO's "Optimization"; the process id alone is a
    # getpid() system call per record).
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "trace" else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The access log is ours (with request ids and redaction); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def _new_request_id() -> str:
    # A correlation id, not a secret: the Mersenne Twister is enough, and unlike
    # secrets.token_hex it costs no getrandom() system call per request.
    return f"{random.getrandbits(64):016x}"


class AccessLog:
    """ASGI middleware: a request id for every request, and one access line at its end.

    Event streams get their ``send`` unwrapped: it is the hot path, called for every
    frame (DESIGN.md section 5). Their endpoint records the status in the scope state.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else _new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        stream = scope["method"] == "GET" and negotiate(
            headers.get(b"accept", b"").decode("latin-1") or None) is Representation.STREAM
        if stream:
            outgoing = send
        else:
            async def outgoing(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    state["status"] = message["status"]
                    message["headers"] = [*message.get("headers", []),
                                          (b"x-request-id", request_id.encode())]
                await send(message)
        try:
            await self.app(scope, receive, outgoing)
        finally:
            access_log.info(
                "%s %s %s", scope["method"], scope["path"], state.get("status", 0),
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": redact_query(scope.get("query_string", b"").decode("latin-1")),
                    "status": state.get("status", 0),
                    "stream": stream,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
