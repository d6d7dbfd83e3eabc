"""Accept negotiation (docs/api.md), as a function."""

from __future__ import annotations

import pytest

from gateway.web.negotiation import Representation, negotiate

JSON, STREAM = Representation.JSON, Representation.STREAM


@pytest.mark.parametrize("accept,expected", [
    (None, JSON), ("", JSON), ("*/*", JSON), ("application/*", JSON),
    ("application/json", JSON), ("text/event-stream", STREAM), ("text/*", STREAM),
    ("application/event-stream", STREAM),
    ("text/event-stream, application/json", JSON),  # a tie goes to JSON
    ("text/event-stream, application/json;q=0.5", STREAM),
    ("application/json;q=0, text/event-stream;q=0.1", STREAM),
    ("text/html", None), ("application/json;q=0", None), ("image/png, text/plain", None),
    ("text/event-stream;q=oops", None),  # an unreadable q is 0
    ("text/event-stream;q=nan", None), ("text/event-stream;q=inf", None),
    ("application/json;q=nan, text/event-stream", STREAM),
    ("nonsense", None),
])
def test_negotiate(accept: str | None, expected: Representation | None) -> None:
    assert negotiate(accept) is expected


def test_long_headers_are_negotiated_too() -> None:
    assert negotiate("text/event-stream, " + "x/y, " * 100) is STREAM
