"""What the update script refuses, and that a refusal writes, bumps and publishes nothing
hostile or careless workers, any language."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gateway.contract import keys, script
from gateway.errors import InvalidUpdate
from gateway.worker import SyncWorker

LIFETIMES = script.Lifetimes()


@pytest.fixture
def worker(redis_url: str) -> Iterator[SyncWorker]:
    with SyncWorker.from_url(redis_url) as w:
        yield w


@pytest.fixture
def run(r: redis.Redis) -> Any:
    return r.register_script(script.SCRIPT)


def state(r: redis.Redis) -> tuple[Any, ...]:
    """Everything a change writes, to compare before and after a refusal."""
    tenant = "default"
    return (r.get(keys.seq_key(tenant)), r.get(keys.epoch_key(tenant)),
            r.hgetall(keys.job_key(tenant, "h")), r.ttl(keys.job_key(tenant, "h")),
            r.zrange(keys.index_key(tenant), 0, -1, withscores=True),
            r.zrange(keys.active_key(tenant), 0, -1, withscores=True),
            r.zrange(keys.expiry_key(tenant), 0, -1, withscores=True))


def call_args(op: str, payload: dict[str, Any] | str | bytes,
              **changes: Any) -> tuple[list, list]:
    call = script.call(op, "h", payload if isinstance(payload, dict) else {}, tenant="default",
                       lifetimes=LIFETIMES)
    args = list(call.args)
    if isinstance(payload, str | bytes):
        args[2] = payload  # raw JSON text (or bytes) the library would never send
    for index, value in changes.get("args", {}).items():
        args[index] = value
    keys_ = changes.get("keys", call.keys)
    return keys_, args


def assert_refused_untouched(r: redis.Redis, run: Any, keys_: list, args: list) -> bytes:
    pubsub = r.pubsub()
    pubsub.subscribe(keys.job_channel("default", "h"), keys.tenant_channel("default"))
    for _ in range(2):
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    before = state(r)
    reply = run(keys=keys_, args=args)
    assert reply[0] == 0, reply
    assert state(r) == before
    assert pubsub.get_message(timeout=0.2) is None  # nothing published
    pubsub.close()
    return bytes(reply[2])


@pytest.fixture
def running(worker: SyncWorker) -> None:
    worker.create("h")
    worker.start("h")


LONG = "é" * 201  # 201 characters, 402 bytes


@pytest.mark.parametrize("op,payload,why", [
    ("progress", {"phase": LONG}, b"phase is longer than 200"),
    ("progress", '{"percent": NaN}', b"percent must be a number"),
    ("progress", '{"percent": Infinity}', b"percent must be a number"),
    ("progress", '{"metrics": {"a": NaN}}', b"finite number"),
    ("progress", '{"metrics": {"a": -Infinity}}', b"finite number"),
    ("progress", {"metrics": {f"m{n}": n for n in range(33)}}, b"at most 32 metrics"),
    ("progress", {"metrics": {"x" * 65: 1}}, b"at most 64 characters"),
    ("progress", b'{"phase": "caf\xe9"}', b"UTF-8"),  # Latin-1, not UTF-8
    ("fail", {"error": {"code": "x", "message": "m" * 4097}}, b"error.message is longer"),
    ("fail", {"error": {"code": "c" * 129, "message": ""}}, b"error.code is longer"),
    ("complete", {"output": {"file_url": "javascript:alert(1)"}}, b"absolute http(s) URL"),
    ("complete", {"output": {"file_url": "//evil.example/x"}}, b"absolute http(s) URL"),
    ("complete", {"output": {"file_url": "data:text/html,hi"}}, b"absolute http(s) URL"),
    ("complete", {"output": {"file_url": "file:///etc/passwd"}}, b"absolute http(s) URL"),
    ("complete", {"output": {"file_url": "https://x.example/a b"}}, b"absolute http(s) URL"),
    ("complete", {"output": {"file_name": "n" * 1025}}, b"output.file_name is longer"),
    ("complete", {"output": {"file_size_bytes": 1e999}}, b"whole number"),
    ("complete", {"output": {"file_count": 2**53 + 2}}, b"whole number"),
    ("complete", '{"output": {"file_count": 1}, "metrics": {"x": [[[[1]]]]}}', b"finite"),
])
def test_bad_values_are_refused_and_nothing_moves(
    r: redis.Redis, run: Any, running: None, op: str, payload: Any, why: bytes
) -> None:
    keys_, args = call_args(op, payload)
    assert why in assert_refused_untouched(r, run, keys_, args)


def test_a_deep_payload_is_refused(r: redis.Redis, run: Any, running: None) -> None:
    deep = '{"metrics": ' + "[" * 2000 + "]" * 2000 + "}"
    keys_, args = call_args("progress", deep)
    assert_refused_untouched(r, run, keys_, args)


@pytest.mark.parametrize("change,why", [
    ({"keys": "four"}, b"6 KEYS"),
    ({"keys": "other tenant"}, b"KEYS[1] must be"),
    ({"keys": "other job"}, b"KEYS[1] must be"),
    ({"args": {3: "gw:{default}:job:other"}}, b"the job channel"),
    ({"args": {4: "gw:{acme}:jobs"}}, b"the tenant channel"),
    ({"args": {5: "1.5"}}, b"the retention"),
    ({"args": {5: "0"}}, b"the retention"),
    ({"args": {6: "-3"}}, b"the output ttl"),
    ({"args": {9: "forever"}}, b"ARGV[10]"),
    ({"args": {1: "../h"}}, b"a job id"),
])
def test_keys_and_arguments_that_disagree_are_refused(
    r: redis.Redis, run: Any, running: None, change: dict[str, Any], why: bytes
) -> None:
    call = script.call("complete", "h", {}, tenant="default", lifetimes=LIFETIMES)
    keys_, args = list(call.keys), list(call.args)
    if change.get("keys") == "four":
        keys_ = keys_[:4]  # the four KEYS of the script's first version
    elif change.get("keys") == "other tenant":
        keys_[0] = keys.job_key("acme", "h")
    elif change.get("keys") == "other job":
        keys_[0] = keys.job_key("default", "other")
    for index, value in change.get("args", {}).items():
        args[index] = value
    assert why in assert_refused_untouched(r, run, keys_, args)


def test_the_worker_library_refuses_non_finite_metrics_as_invalid_update(
    worker: SyncWorker, r: redis.Redis, running: None
) -> None:
    before = state(r)
    with pytest.raises(InvalidUpdate, match="finite"):
        worker.progress("h", 5, metrics={"a": math.nan})
    assert state(r) == before


def test_jobs_that_never_end_expire_after_their_last_change(
    redis_url: str, r: redis.Redis
) -> None:
    with SyncWorker.from_url(redis_url, active_ttl_seconds=100) as worker:
        worker.create("h")
        assert 95 <= r.ttl(keys.job_key("default", "h")) <= 100
        r.expire(keys.job_key("default", "h"), 10)
        worker.start("h")  # each change renews it
        assert 95 <= r.ttl(keys.job_key("default", "h")) <= 100
        worker.fail("h", "x")
        assert r.ttl(keys.job_key("default", "h")) > 100  # the retention now (24 h)


def test_expired_jobs_leave_the_index_and_the_active_set(redis_url: str, r: redis.Redis) -> None:
    with SyncWorker.from_url(redis_url, retention_seconds=1, active_ttl_seconds=1) as worker:
        for n in range(5):
            worker.create(f"old{n}")
            if n % 2:
                worker.cancel(f"old{n}")
    time.sleep(2.2)  # their records are gone (1 s) and a second more has passed
    assert r.exists(*(keys.job_key("default", f"old{n}") for n in range(5))) == 0
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("new")
    assert r.zrange(keys.index_key("default"), 0, -1) == [b"new"]
    assert r.zrange(keys.active_key("default"), 0, -1) == [b"new"]
    assert r.zrange(keys.expiry_key("default"), 0, -1) == [b"new"]


def test_a_stored_snapshot_is_valid_json_in_utf8(worker: SyncWorker, r: redis.Redis) -> None:
    worker.create("h", conversion={"original_filename": "r\u00e9sum\u00e9 \u2014 \U0001f4c4.docx"})
    stored = r.hget(keys.job_key("default", "h"), "snapshot")
    assert json.loads(stored.decode("utf-8"))["conversion"]["original_filename"].endswith(
        "\U0001f4c4.docx")
