"""The update script's rules (docs/api.md, The job snapshot; docs/workers.md),
through the sync worker."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
import redis

from gateway.contract import keys
from gateway.embedded import EmbeddedRedis, server_binary
from gateway.errors import InvalidTransition, InvalidUpdate, JobAlreadyExists, JobNotFound
from gateway.worker import SyncWorker

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.fixture
def worker(redis_url: str) -> SyncWorker:
    with SyncWorker.from_url(redis_url) as w:
        yield w


def stored(r: redis.Redis, job_id: str) -> dict:
    return json.loads(r.hget(keys.job_key("default", job_id), "snapshot"))


def test_create_gives_the_documented_snapshot(worker: SyncWorker, r: redis.Redis) -> None:
    conversion = {"source_format": "docx", "target_format": "pdf",
                  "source_size_bytes": 524288, "original_filename": "report.docx"}
    snap = worker.create("j1", conversion=conversion)
    assert list(snap) == ["job_id", "status", "progress", "conversion", "output", "metrics",
                          "error", "cancel_requested", "created_at", "updated_at", "expires_at",
                          "version"]
    assert snap["status"] == "queued"
    assert snap["version"] == 1
    assert snap["progress"] == {"percent": 0.0, "phase": None, "eta_at": None, "rate": None}
    assert snap["conversion"] == conversion
    assert snap["output"] is None and snap["error"] is None and snap["expires_at"] is None
    assert snap["cancel_requested"] is False
    assert RFC3339.fullmatch(snap["created_at"]) and snap["created_at"] == snap["updated_at"]
    assert stored(r, "j1") == snap
    # The tenant index and counter moved with it.
    assert r.zscore(keys.index_key("default"), "j1") == 1
    assert int(r.get(keys.seq_key("default"))) == 1
    assert re.fullmatch(rb"[a-z0-9]{6,16}", r.get(keys.epoch_key("default")))


def test_timestamps_come_from_the_redis_clock(tmp_path: Path) -> None:
    """A Valkey whose clock is an hour ahead of this host's (libfaketime): the stamps are
    its time, not the worker's."""
    import datetime as dt

    # libfaketime preloaded into the server itself: the faketime command would fork it and
    # wait, and stopping the command would leave the server running.
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert libraries, "libfaketime is missing: scripts/install-system installs it"
    ahead = tmp_path / "valkey-an-hour-ahead"
    ahead.write_text(f'#!/bin/sh\nLD_PRELOAD={libraries[0]} FAKETIME="+1h" '
                     f'exec {server_binary()} "$@"\n')
    ahead.chmod(0o755)
    with EmbeddedRedis(binary=str(ahead)) as server, SyncWorker.from_url(server.url) as worker:
        snap = worker.create("clock")
    # Stopping the server stopped the one that listened, not a wrapper around it.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    stamp = dt.datetime.strptime(snap["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC)
    assert 3600 - 60 <= stamp.timestamp() - time.time() <= 3600 + 60


def test_create_twice_is_refused(worker: SyncWorker) -> None:
    worker.create("dup")
    with pytest.raises(JobAlreadyExists) as info:
        worker.create("dup")
    assert "dup" in str(info.value) and info.value.status == "queued"


def test_a_whole_successful_life(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("life")
    snap = worker.start("life", phase="Loading")
    assert (snap["status"], snap["progress"]["phase"], snap["version"]) == ("running", "Loading", 2)
    snap = worker.progress("life", 45, phase="Extracting questions")
    assert _shown(snap["progress"]) == {"percent": 45.0, "phase": "Extracting questions"}
    snap = worker.progress("life", 45.5)
    assert _shown(snap["progress"]) == {"percent": 45.5, "phase": "Extracting questions"}
    snap = worker.complete("life", file_url="https://files.example/out.pdf", file_name="out.pdf",
                           content_type="application/pdf", file_size_bytes=612345,
                           metrics={"output_bytes": 612345})
    assert snap["status"] == "completed" and snap["version"] == 5
    assert snap["progress"]["percent"] == 100.0
    output = snap["output"]
    assert output["file_url"] == "https://files.example/out.pdf"  # no escaped slashes
    assert (output["file_name"], output["content_type"], output["file_size_bytes"],
            output["file_count"]) == ("out.pdf", "application/pdf", 612345, 1)
    assert RFC3339.fullmatch(output["expires_at"]) and RFC3339.fullmatch(snap["expires_at"])
    assert snap["metrics"] == {"output_bytes": 612345}
    # Terminal: the record expires (24 h by default) and keeps the snapshot meanwhile.
    ttl = r.ttl(keys.job_key("default", "life"))
    assert 24 * 3600 - 5 <= ttl <= 24 * 3600
    assert '\\/' not in r.hget(keys.job_key("default", "life"), "snapshot").decode()


@pytest.mark.parametrize("end", ["complete", "fail", "cancel"])
def test_terminal_states_are_final(worker: SyncWorker, end: str) -> None:
    worker.create("t")
    worker.start("t")
    {"complete": lambda: worker.complete("t", file_url="https://files.example/out"),
     "fail": lambda: worker.fail("t", "conversion.failed", "bad input"),
     "cancel": lambda: worker.cancel("t")}[end]()
    for attempt in (lambda: worker.progress("t", 99), lambda: worker.start("t"),
                    lambda: worker.complete("t"), lambda: worker.fail("t", "x"),
                    lambda: worker.cancel("t")):
        with pytest.raises(InvalidTransition) as info:
            attempt()
        assert info.value.job_id == "t"
        assert info.value.status == {"complete": "completed", "fail": "failed",
                                     "cancel": "canceled"}[end]
    # Deleting is the one change a job that ended still takes.
    assert worker.delete("t") == {"job_id": "t", "version": 4}


def test_progress_never_decreases_while_running(worker: SyncWorker) -> None:
    worker.create("p")
    worker.start("p")
    worker.progress("p", 50)
    with pytest.raises(InvalidTransition) as info:
        worker.progress("p", 49.9)
    assert "progress" in str(info.value) and "'p'" in str(info.value)
    assert worker.progress("p", 50.1)["progress"]["percent"] == 50.1


def test_progress_needs_a_running_job(worker: SyncWorker) -> None:
    worker.create("q")
    with pytest.raises(InvalidTransition, match="start"):
        worker.progress("q", 10)


@pytest.mark.parametrize("percent", [-1, 100.5, float("inf")])
def test_percent_out_of_range_is_refused(worker: SyncWorker, percent: float) -> None:
    worker.create("r")
    worker.start("r")
    with pytest.raises(InvalidUpdate):
        worker.progress("r", percent)


def test_queued_can_fail_or_be_canceled_but_not_complete(worker: SyncWorker) -> None:
    worker.create("a")
    with pytest.raises(InvalidTransition):
        worker.complete("a")
    assert worker.fail("a", "input.unreadable", "cannot open")["error"] == {
        "code": "input.unreadable", "message": "cannot open"}
    worker.create("b")
    assert worker.cancel("b")["status"] == "canceled"


def test_unknown_fields_are_refused(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("u")
    worker.start("u")
    script = r.register_script(__import__("gateway.contract.script", fromlist=["SCRIPT"]).SCRIPT)
    from gateway.contract import script as changes

    for op, payload in [("progress", {"percnt": 5}), ("complete", {"output": {"url": "x"}}),
                        ("create", {"conversion": {"format": "x"}})]:
        call = changes.call(op, "u" if op != "create" else "u2", payload, tenant="default",
                            lifetimes=changes.Lifetimes())
        reply = script(keys=call.keys, args=call.args)
        assert reply[0] == 0 and reply[1] == b"invalid_argument", (op, reply)
    assert stored(r, "u")["version"] == 2


def test_unknown_job_is_not_found(worker: SyncWorker) -> None:
    with pytest.raises(JobNotFound):
        worker.start("nobody")


def test_invalid_job_id_is_refused_before_redis(worker: SyncWorker) -> None:
    with pytest.raises(InvalidUpdate):
        worker.create("not valid!")


def test_same_progress_twice_changes_nothing(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("n")
    worker.start("n")
    worker.progress("n", 10, phase="x")
    seq = int(r.get(keys.seq_key("default")))
    assert worker.progress("n", 10, phase="x")["version"] == 3
    assert int(r.get(keys.seq_key("default"))) == seq


def test_request_cancel(worker: SyncWorker) -> None:
    worker.create("c1")
    assert worker.request_cancel("c1")["status"] == "canceled"  # queued: at once
    worker.create("c2")
    worker.start("c2")
    snap = worker.request_cancel("c2")
    assert (snap["status"], snap["cancel_requested"]) == ("running", True)
    assert worker.cancel("c2")["status"] == "canceled"
    with pytest.raises(InvalidTransition):
        worker.request_cancel("c2")


def test_delete_only_after_the_end(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("d")
    with pytest.raises(InvalidTransition):
        worker.delete("d")
    worker.cancel("d")
    worker.delete("d")
    assert not r.exists(keys.job_key("default", "d"))


def test_every_change_is_published_on_both_channels(worker: SyncWorker, r: redis.Redis) -> None:
    pubsub = r.pubsub()
    pubsub.subscribe(keys.job_channel("default", "m"), keys.tenant_channel("default"))
    for _ in range(2):
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    worker.create("m")
    worker.start("m")
    messages = []
    while len(messages) < 4:
        message = pubsub.get_message(timeout=2)
        assert message is not None
        messages.append(message)
    pubsub.close()
    headers = [m["data"].split(b"\n", 1)[0].split(b" ") for m in messages]
    events = [(h[1], h[2], h[3], h[5]) for h in headers]
    assert events.count((b"status", b"1", b"queued", b"m")) == 2
    assert events.count((b"status", b"2", b"running", b"m")) == 2
    epoch = r.get(keys.epoch_key("default"))
    assert {h[0] for h in headers} == {epoch + b"-1", epoch + b"-2"}
    body = json.loads(messages[-1]["data"].split(b"\n", 1)[1])
    assert body == stored(r, "m")


def test_the_publish_command_is_passed_in(worker: SyncWorker, r: redis.Redis) -> None:
    """SPUBLISH where channels are sharded (a cluster); PUBLISH when none is given."""
    from gateway.contract import script

    run = r.register_script(script.SCRIPT)
    sharded, plain = r.pubsub(), r.pubsub()
    sharded.ssubscribe(keys.job_channel("default", "s"))
    plain.subscribe(keys.job_channel("default", "s"))
    assert sharded.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    assert plain.get_message(timeout=2)["type"] == "subscribe"
    call = script.call("create", "s", {}, tenant="default", lifetimes=script.Lifetimes(),
                       publish="SPUBLISH")
    assert run(keys=call.keys, args=call.args)[0] == 1
    message = sharded.get_sharded_message(timeout=2)
    assert message["type"] == "smessage" and b" status 1 queued " in message["data"]
    assert plain.get_message(timeout=0.2) is None
    worker.start("s")  # the worker library: PUBLISH
    assert plain.get_message(timeout=2)["type"] == "message"
    assert sharded.get_sharded_message(timeout=0.2) is None
    sharded.close()
    plain.close()
    bad = script.call("progress", "s", {"percent": 5}, tenant="default",
                      lifetimes=script.Lifetimes(), publish="EVAL")
    reply = run(keys=bad.keys, args=bad.args)
    assert reply[:2] == [0, b"invalid_argument"] and stored(r, "s")["version"] == 2
    # Workers in other languages that pass eight ARGV still publish with PUBLISH.
    assert run(keys=bad.keys, args=bad.args[:8])[0] == 1


def test_a_lost_counter_gets_a_new_epoch(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("e1")
    first = r.get(keys.epoch_key("default"))
    r.flushall()
    worker.create("e1")
    assert r.get(keys.epoch_key("default")) != first


def test_the_active_set_holds_the_jobs_not_yet_ended(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("a1")
    worker.create("a2")
    worker.start("a2")
    worker.create("a3")
    worker.cancel("a3")
    active = r.zrange(keys.active_key("default"), 0, -1, withscores=True)
    assert active == [(b"a1", 1.0), (b"a2", 3.0)]
    worker.fail("a2", "x")
    assert r.zrange(keys.active_key("default"), 0, -1) == [b"a1"]


def test_numbers_come_back_exactly_as_they_were_given(worker: SyncWorker) -> None:
    big = 2**53 - 1  # the largest count JSON carries exactly
    worker.create("exact", conversion={"source_size_bytes": big})
    worker.start("exact")
    worker.progress("exact", 12.5, metrics={"pages": 1e15, "ratio": 0.1, "tiny": 1.23456789e-7,
                                             "third": 1 / 3})
    done = worker.complete("exact", file_url="https://files.example/x", file_size_bytes=big,
                           file_count=2)
    assert done["conversion"]["source_size_bytes"] == big
    assert done["output"]["file_size_bytes"] == big
    assert done["metrics"] == {"pages": 1e15, "ratio": 0.1, "tiny": 1.23456789e-7,
                               "third": 1 / 3}


def test_a_percent_is_kept_exactly_so_the_same_report_changes_nothing(worker: SyncWorker) -> None:
    worker.create("third")
    worker.start("third")
    first = worker.progress("third", 100 / 3)
    assert first["progress"]["percent"] == 100 / 3
    assert worker.progress("third", 100 / 3)["version"] == first["version"]
    assert worker.progress("third", 99.99999999999999)["progress"]["percent"] == 99.99999999999999
    with pytest.raises(InvalidUpdate, match=r"from 0 to 2\^53 \(9007199254740992\)"):
        worker.create("too-big", conversion={"source_size_bytes": 2**53 + 2})


def _shown(progress: dict[str, object]) -> dict[str, object]:
    """Percent and phase: what a worker reported (the time left is estimated apart)."""
    return {"percent": progress["percent"], "phase": progress["phase"]}
