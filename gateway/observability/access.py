"""The access log: one line per request, written when the request ends (docs/operations.md, Logs).

It reads what the request's context (gateway.web.context) noted, and negotiates nothing.
Of the query, only the API's own parameters are written, and only with values of their
own shape; every other value is ``REDACTED`` (an allow-list: a list of names that look
secret always misses one).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode

from starlette.types import Scope

if TYPE_CHECKING:
    from gateway.web.context import Context

access_log = logging.getLogger("gateway.access")

# The query parameters of the API, and the shape their values have (job ids, statuses,
# numbers, event ids: all within this).
_LOGGED = frozenset({"job_id", "status", "limit", "cursor", "last_event_id"})
_VALUE = r"[A-Za-z0-9_-]{1,128}"
_PLAIN_VALUE = re.compile(_VALUE)
_PLAIN_QUERY = re.compile(  # a query of nothing else, written as it is (the common case)
    rf"(?:(?:{'|'.join(sorted(_LOGGED))})={_VALUE}(?:&(?!$)|$))+")


def redact_query(query: str) -> str:
    if not query or _PLAIN_QUERY.fullmatch(query):
        return query
    pairs = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _LOGGED and _PLAIN_VALUE.fullmatch(value):
            pairs.append((name, value))
        else:  # another name may itself be a secret (?hunter2): neither is written
            pairs.append(("REDACTED", "REDACTED"))
    return urlencode(pairs)


class Sink(Protocol):
    """Where access lines go around ``logging`` (gateway.observability.logs.AccessSink)."""

    def usable(self) -> bool: ...

    def write(self, msg: str, fields: dict[str, Any]) -> bool: ...


_sink: Sink | None = None


def use_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def write(context: Context, scope: Scope) -> None:
    """The access line of a request that ended."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    method, path, status = scope["method"], scope["path"], context.status
    fields = {
        "request_id": context.request_id,
        "method": method,
        "path": path,
        "query": redact_query(scope.get("query_string", b"").decode("latin-1")),
        "status": status,
        "stream": context.stream,
        # Who asked, as the credential says (never the credential): null when the route
        # needs none or the credential was refused.
        "tenant": context.principal.tenant if context.principal is not None else None,
        "duration_ms": round((time.perf_counter() - context.started) * 1000, 2),
        "client": (scope.get("client") or ("", 0))[0],
    }
    sink = _sink
    if sink is not None and sink.usable() and sink.write(f"{method} {path} {status}", fields):
        return
    access_log.info("%s %s %s", method, path, status, extra=fields)
