"""The bytes of a stream, as the SSE specification reads them (its examples as tests)."""

from __future__ import annotations

import pytest
from sse_starlette import ServerSentEvent

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


@pytest.mark.parametrize("data", [
    b'{"job_id":"a","status":"running","version":2}',
    b'{"phase":"caf\xc3\xa9 \xe2\x80\x94 page 3"}',  # UTF-8 beyond ASCII
    b'{"message":"a\\nb"}',  # an escaped newline is no line break
    b"",
])
def test_one_line_data_is_framed_exactly_as_the_library_frames_it(data: bytes) -> None:
    expected = ServerSentEvent(data.decode(), event="progress", id="e00001-2",
                               sep="\n").encode()
    assert frames.event(b"e00001-2", b"progress", data) == expected


@pytest.mark.parametrize("data", [
    b'{"a":1}\nevent: deleted',
    b'{"a":1}\rid: e99999-1\revent: deleted',
    b'{"a":1}\r\n\r\ndata: x',
])
def test_a_line_break_in_data_cannot_forge_a_field(data: bytes) -> None:
    frame = frames.event(b"e00001-2", b"progress", data)
    lines = frame.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert lines[:2] == ["id: e00001-2", "event: progress"]
    assert frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1
    assert all(line.startswith("data: ") for line in lines[2:-2])
