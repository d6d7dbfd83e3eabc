"""The access log: one line per request, written when the request ends (issue 4).

It reads what the request's context (gateway.web.context) noted, and negotiates nothing.
Query parameters that may carry a secret are written as ``REDACTED``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from starlette.types import Scope

if TYPE_CHECKING:
    from gateway.web.context import Context

access_log = logging.getLogger("gateway.access")

# Query parameters whose values never reach a log: API keys, tokens, presigned signatures.
_SECRET = re.compile(r"key|token|secret|password|passwd|signature|sig|auth|credential", re.I)


def redact_query(query: str) -> str:
    if "%" not in query and not _SECRET.search(query):
        return query  # nothing that could name a secret, even encoded (the common case)
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "REDACTED" if _SECRET.search(k) else v) for k, v in pairs])


def write(context: Context, scope: Scope) -> None:
    """The access line of a request that ended."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s", scope["method"], scope["path"], context.status,
        extra={
            "request_id": context.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "query": redact_query(scope.get("query_string", b"").decode("latin-1")),
            "status": context.status,
            "stream": context.stream,
            "duration_ms": round((time.perf_counter() - context.started) * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
        },
    )
