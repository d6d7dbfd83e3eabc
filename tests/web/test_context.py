"""The request context: request ids, the tenant, the headers every answer carries."""

from __future__ import annotations

from gateway.web.context import Context
from gateway.web.negotiation import Representation


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "method": "GET", "path": "/", "headers": list(headers)}


def test_a_given_request_id_is_kept_and_a_bad_one_replaced() -> None:
    assert Context(scope((b"x-request-id", b"req-42"))).request_id == "req-42"
    made = Context(scope((b"x-request-id", b"no spaces allowed"))).request_id
    assert made != "no spaces allowed" and len(made) == 16
    assert Context(scope()).request_id != Context(scope()).request_id


def test_the_first_of_repeated_headers_counts() -> None:
    context = Context(scope((b"accept", b"text/event-stream"), (b"accept", b"application/json"),
                            (b"x-request-id", b"one"), (b"x-request-id", b"two")))
    assert context.representation() is Representation.STREAM
    assert context.request_id == "one"


def test_every_start_carries_the_request_id_once_and_notes_the_status() -> None:
    raw = scope()
    context = Context(raw)
    assert Context.of(raw) is context
    assert context.tenant == "default"
    start = context.start(204, [(b"vary", b"Accept")])
    assert start["headers"] == [(b"vary", b"Accept"), (b"x-request-id",
                                                       context.request_id.encode())]
    assert context.status == 204
