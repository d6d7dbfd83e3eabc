"""Content negotiation on ``Accept`` (docs/api.md).

JSON for ``application/json``, ``application/*``, ``*/*`` or no header; the event stream
for ``text/event-stream``. Each type takes the q-value of the most specific range that
matches it (RFC 9110 section 12.5.1); the higher q wins, a tie goes to JSON, and q=0 for
both means nothing acceptable (406).
"""

from __future__ import annotations

import math
from enum import Enum
from functools import lru_cache


class Representation(Enum):
    JSON = "application/json"
    STREAM = "text/event-stream"


# The ranges that match each representation, most specific first. application/event-stream
# is what one vendor's job status API documents for its event stream; it is taken
# as a synonym so that its clients work unchanged.
_MATCHES = {
    Representation.JSON: (("application", "json"), ("application", "*"), ("*", "*")),
    Representation.STREAM: (("text", "event-stream"), ("application", "event-stream"),
                            ("text", "*")),
}


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if not media:
            continue
        kind, slash, sub = media.partition("/")
        if not slash or not kind or not sub:
            continue  # a malformed range accepts nothing
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                # nan and inf are no q-values: such a range accepts nothing.
                q = min(max(q, 0.0), 1.0) if math.isfinite(q) else 0.0
        ranges.append((kind, sub, q))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], rep: Representation) -> float:
    """The q of the most specific range that matches ``rep`` (0 when none does)."""
    for pattern in _MATCHES[rep]:
        for kind, sub, q in ranges:
            if (kind, sub) == pattern:
                return q
    return 0.0


def negotiate(accept: str | None) -> Representation | None:
    """The representation to serve, or None when nothing acceptable is offered (406)."""
    if accept is not None and len(accept) > 256:
        return _negotiate(accept)  # not cached: a client could fill the cache with these
    return _negotiate_cached(accept)


def _negotiate(accept: str | None) -> Representation | None:
    if accept is None or not accept.strip():
        return Representation.JSON
    ranges = _ranges(accept)
    json_q = _quality(ranges, Representation.JSON)
    stream_q = _quality(ranges, Representation.STREAM)
    if json_q == 0 and stream_q == 0:
        return None
    return Representation.STREAM if stream_q > json_q else Representation.JSON


# Clients send a handful of distinct Accept headers: each short one is parsed once.
_negotiate_cached = lru_cache(maxsize=512)(_negotiate)
