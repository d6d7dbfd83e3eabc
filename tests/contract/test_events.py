"""Channel messages and event ids: update.lua's format in, SSE frames out."""

from __future__ import annotations

import json

import pytest

from gateway.contract.events import EventId, Message
from gateway.contract.record import Record, Status

SNAPSHOT = b'{"job_id":"a1","status":"running","version":3}'


def test_a_published_message_becomes_one_frame() -> None:
    message = Message.parse(b"k3x9q2-17 progress 3 running 1700000000123456 a1\n" + SNAPSHOT)
    assert (message.epoch, message.seq, message.event, message.version) == (
        "k3x9q2", 17, "progress", 3)
    assert message.status is Status.RUNNING and not message.terminal
    assert message.published_us == 1700000000123456
    assert message.frame == (b"id: k3x9q2-17\nevent: progress\ndata: " + SNAPSHOT + b"\n\n")
    assert message.body(False) is message.body(False)  # one ASGI body for every watcher
    assert message.body(True)["more_body"] is False
    assert message.relabelled() == message.frame.replace(b"event: progress", b"event: status")


@pytest.mark.parametrize("payload", [
    b"",
    b"no newline at all",
    b"k3x9q2-17 progress 3 running 0 a1\nnot an object",
    b"k3x9q2-17 progress 3 running 0 a1\n{}\n{}",
    b"k3x9q2 progress 3 running 0 a1\n{}",
    b"k3x9q2-17 progress three running 0 a1\n{}",
    b"k3x9q2-17 progress 3 dancing 0 a1\n{}",
    b"k3x9q2-17 progress 3 running 0\n{}",
    b"k3x9q2-17 progress 3 running " + b"9" * 400 + b" a1\n{}",
    b"k3x9q2-" + b"9" * 400 + b" progress 3 running 0 a1\n{}",
    b"k3x9q2-17 progress 3 running 0 a1\n{}\revent: deleted",
    b"k3x9q2-17 progress 3 running 0 a/1\n{}",
    b"K3X9Q2-17 progress 3 running 0 a1\n{}",
    b"k3x9q2-17 snapshot 3 running 0 a1\n{}",
    b"k3x9q2-17 progress 3 running 0 a1 extra\n{}",
    b"k3x9q2-17  progress 3 running 0 a1\n{}",
    "k3x9q2-17 progress \u0663 running 0 a1\n{}".encode(),  # a digit, but not ASCII
])
def test_anything_else_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Message.parse(payload)


def test_terminal_statuses_and_deletions_are_terminal() -> None:
    for status in ("completed", "failed", "canceled"):
        parsed = Message.parse(f"e00001-2 status 2 {status} 0 a1\n{{}}".encode())
        assert parsed.terminal
    assert Message.deleted("e00001", 9, "a1", None).terminal


def test_a_deletion_is_built_one_way() -> None:
    found_gone = Message.deleted("e00001", 9, "a1", None)
    assert json.loads(found_gone.data) == {"job_id": "a1", "version": None}
    assert found_gone.frame.startswith(b"id: e00001-9\nevent: deleted\n")
    # As the update script publishes it: the data line is rebuilt from the header.
    published = Message.parse(b'e00001-9 deleted 4 canceled 0 a1\n{"job_id":"a1","version":4}')
    assert (published.version, published.seq, published.terminal) == (4, 9, True)
    assert json.loads(published.data) == {"job_id": "a1", "version": 4}
    assert published.frame == Message.deleted("e00001", 9, "a1", 4).frame


def test_a_record_becomes_the_message_of_its_current_snapshot() -> None:
    record = Record(job_id="a1", snapshot=SNAPSHOT, version=3, seq=17, epoch="k3x9q2",
                    status=Status.RUNNING, status_seq=12, output_expires=None)
    message = Message.from_record(record, "snapshot")
    assert (message.event_id, message.event, message.version) == (b"k3x9q2-17", "snapshot", 3)
    assert message.data == SNAPSHOT


@pytest.mark.parametrize("raw,expected", [
    ("k3x9q2-17", EventId("k3x9q2", 17)),
    (" k3x9q2-17 ", EventId("k3x9q2", 17)),
    ("K3X9Q2-17", None),
    ("short-1", None),
    ("k3x9q2-", None),
    ("k3x9q2-1-2", None),
    ("", None),
    (None, None),
])
def test_event_ids(raw: str | None, expected: EventId | None) -> None:
    assert EventId.parse(raw) == expected
    if expected is not None:
        assert str(expected) == raw.strip()  # type: ignore[union-attr]
