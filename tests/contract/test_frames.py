"""The bytes of a stream, as the SSE specification reads them (its examples as tests)."""

from __future__ import annotations

from gateway.contract import frames


def test_retry_heartbeat_and_unknown() -> None:
    assert frames.retry(3000) == b"retry: 3000\n\n"
    assert frames.HEARTBEAT == b": keepalive\n\n"  # a comment: browsers dispatch nothing
    assert frames.HEARTBEAT_BODY["body"] is frames.HEARTBEAT
    assert frames.unknown(["a", "b"]) == b'event: unknown\ndata: {"job_ids":["a","b"]}\n\n'


def test_an_event_has_an_id_a_name_and_one_data_line() -> None:
    assert frames.event(b"e00001-2", b"status", b'{"a":1}') == (
        b'id: e00001-2\nevent: status\ndata: {"a":1}\n\n')


def test_stream_headers() -> None:
    headers = dict(frames.STREAM_HEADERS)
    assert headers[b"content-type"] == b"text/event-stream"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    assert frames.body(b"x", more=True) == {"type": "http.response.body", "body": b"x",
                                            "more_body": True}
