"""The least-privilege ACL that docs/operations.md documents (Redis permissions) is enough.

The two ACL lines are read from that page itself, so the documentation and what is
tested cannot drift apart.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from gateway.auth import apikeys
from gateway.auth.principal import Scope
from gateway.worker import SyncWorker

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_acl() -> dict[str, list[str]]:
    lines = re.findall(r"^ACL SETUSER (\w+) (.+)$", OPERATIONS.read_text(), re.M)
    assert {user for user, _ in lines} == {"gateway", "worker"}, lines
    return {user: rules.replace(">change-me", ">pw-" + user).split() for user, rules in lines}


@pytest.fixture
def acl_users(r: redis.Redis) -> dict[str, str]:
    users = documented_acl()
    r.acl_log_reset()
    for user, rules in users.items():
        r.execute_command("ACL", "SETUSER", user, "reset", *rules)
    yield {user: f"pw-{user}" for user in users}
    for user in users:
        r.execute_command("ACL", "DELUSER", user)


def test_a_gateway_and_a_worker_work_under_the_documented_acl(
    redis_url: str, r: redis.Redis, start_gateway, acl_users: dict[str, str]
) -> None:
    def url(user: str) -> str:
        return redis_url.replace("redis://", f"redis://{user}:{acl_users[user]}@")

    # With auth on (docs/api.md, Auth): the gateway reads the keys, makes the token secret and
    # writes when keys were used, under the same line.
    key, _ = apikeys.create(r, "default", Scope.WRITE)
    gateway = start_gateway(url("gateway"), GATEWAY_PROBE_SECONDS="0.2")
    with SyncWorker.from_url(url("worker")) as worker, httpx.Client(
            base_url=gateway.url, timeout=10, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        token = client.post("/v1/tokens", json={}).json()["token"]
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}
                          ).status_code == 200
        created = client.post("/v1/jobs", json={"job_id": "acl"})
        assert created.status_code == 201, created.text
        with connect_sse(client, "GET", "/v1/jobs/acl") as source:
            events = source.iter_sse()
            assert next(events).event == "snapshot"
            worker.start("acl")
            worker.progress("acl", 50, phase="half")
            worker.complete("acl", file_url="https://files.example/acl.pdf")
            # Changes that come together may be sent as the newest alone: the end.
            last = [event for event in events][-1]
        assert (last.event, json.loads(last.data)["status"]) == ("status", "completed")
        assert client.get("/v1/jobs").json()["jobs"][0]["status"] == "completed"
        assert client.get("/v1/jobs/acl/download").status_code == 307
        # The multi-job streams read the tenant's index and active set: opened afresh,
        # and resumed (named jobs, and the whole tenant).
        assert client.post("/v1/jobs", json={"job_id": "acl2"}).status_code == 201
        opened = []
        for path in ("/v1/jobs", "/v1/jobs?job_id=acl&job_id=acl2"):
            for resume in ({}, {"Last-Event-ID": last.id}):
                with connect_sse(client, "GET", path, headers=resume) as source:
                    assert source.response.status_code == 200, (path, resume,
                                                                source.response.read())
                    first = next(e for e in source.iter_sse() if e.data)  # past `retry:`
                    opened.append((first.event, json.loads(first.data)["job_id"]))
        # The tenant's jobs not ended, then what changed since; both named jobs, then
        # the one that changed since.
        assert opened == [("snapshot", "acl2"), ("snapshot", "acl2"), ("snapshot", "acl"),
                          ("snapshot", "acl2")]
        assert client.post("/v1/jobs/acl2/cancel").status_code == 202
        assert client.delete("/v1/jobs/acl").status_code == 204
        time.sleep(1.5)  # the probe has published and been heard a few times, and the
        assert client.get("/readyz").status_code == 200  # keyring has written the key's use
    assert apikeys.key_id_of(key) in apikeys.last_used(r)
    assert "NOPERM" not in gateway.output() and "refused" not in gateway.output()
    # Nothing either user ran was refused, whatever became of it, but the two optional
    # commands: naming a connection (the gateway's CLIENT SETNAME, redis-py's SETINFO).
    optional = {"client|setname", "client|setinfo"}
    refused = [(e["username"], e["object"]) for e in r.acl_log()
               if e["username"] in acl_users and e["object"] not in optional]
    assert refused == []
    # Without CLIENT SETNAME the gateway's connections just go unnamed.
    assert not [c for c in r.client_list() if c["user"] == "gateway" and c["name"]]
