"""The ``gateway`` command on a Valkey Cluster: keys, job and serve --workers, all with
GATEWAY_REDIS_CLUSTER=true, and a clear stop when the mode does not match the server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
import pytest
from conftest import GatewayProcess, wait_ready
from httpx_sse import connect_sse

from gateway.auth import apikeys
from gateway.auth.principal import Scope
from gateway.backend import nodes
from gateway.contract import keys
from gateway.embedded import EmbeddedCluster
from gateway.worker import SyncWorker

pytestmark = pytest.mark.timeout(90)


def _gateway(url: str, *args: str, cluster: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"REDIS_URL": url, "PATH": "/usr/bin:/bin"}
    if cluster:
        env["GATEWAY_REDIS_CLUSTER"] = "true"
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_keys_job_and_serve_with_workers_on_a_cluster(cluster: EmbeddedCluster) -> None:
    made = _gateway(cluster.url, "keys", "create", "--tenant", "acme", "--scope", "write",
                    "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    for args in (["create", "j1"], ["start", "j1"], ["progress", "j1", "40"]):
        done = _gateway(cluster.url, "job", *args, "--tenant", "acme")
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["progress"]["percent"] == 40
    gateway = GatewayProcess(cluster.url, {"GATEWAY_REDIS_CLUSTER": "true"})
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(gateway.port), "--workers",
         "2"], env=gateway.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(gateway.url, 30)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client, \
                connect_sse(client, "GET", "/v1/jobs/j1") as source:
            events = source.iter_sse()
            first = next(events)
            assert json.loads(first.data)["progress"]["percent"] == 40
            done = _gateway(cluster.url, "job", "complete", "j1", "--tenant", "acme")
            assert done.returncode == 0, done.stderr
            last = next(e for e in events if e.event == "status")
            assert json.loads(last.data)["status"] == "completed"
    finally:
        process.terminate()
        process.wait(20)


def test_a_cluster_without_the_setting_and_a_server_with_it_stop_in_one_line(
    cluster: EmbeddedCluster, redis_url: str
) -> None:
    node = cluster.url.split(",")[0]
    for url, cluster_mode, says in (
            (node, False, "set GATEWAY_REDIS_CLUSTER=true"),
            (redis_url, True, "no cluster node")):
        served = _gateway(url, "serve", "--port", "0", cluster=cluster_mode)
        assert served.returncode == 2, served.stderr
        assert says in served.stderr and len(served.stderr.strip().splitlines()) == 1, (
            served.stderr)
        job = _gateway(url, "job", "create", "x", cluster=cluster_mode)
        assert job.returncode == 2 and says in job.stderr, job.stderr


def test_a_gateway_and_a_worker_work_under_the_documented_cluster_acl(
    cluster: EmbeddedCluster,
) -> None:
    from test_acl import OPERATIONS, documented_acl

    additions = dict(re.findall(r"^(\w+) on a cluster: (.+)$", OPERATIONS.read_text(), re.M))
    assert additions.keys() == {"gateway", "worker"}
    users = {user: [*rules, *additions[user].split()] for user, rules in documented_acl().items()}
    for node in cluster.nodes:
        with cluster.client(node) as client:
            for user, rules in users.items():
                client.execute_command("ACL", "SETUSER", user, "reset", *rules)

    def url(user: str) -> str:
        return ",".join(node.replace("redis://", f"redis://{user}:pw-{user}@")
                        for node in cluster.url.split(","))

    with nodes.sync_client(cluster.url, cluster=True) as admin:
        key, _ = apikeys.create(admin, "acme", Scope.WRITE)
    gateway = GatewayProcess(url("gateway"), {"GATEWAY_REDIS_CLUSTER": "true",
                                               "GATEWAY_PROBE_SECONDS": "0.2"})
    gateway.start()
    try:
        with SyncWorker.from_url(url("worker"), cluster=True, tenant="acme") as worker, \
                httpx.Client(base_url=gateway.url, timeout=10,
                             headers={"Authorization": f"Bearer {key}"}) as client:
            token = client.post("/v1/tokens", json={}).json()["token"]
            assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}
                              ).status_code == 200
            assert client.post("/v1/jobs", json={"job_id": "acl"}).status_code == 201
            with connect_sse(client, "GET", "/v1/jobs/acl") as source:
                events = source.iter_sse()
                assert next(events).event == "snapshot"
                worker.start("acl")
                worker.progress("acl", 50)
                worker.complete("acl", file_url="https://files.example/acl.pdf")
                last = [event for event in events][-1]
            assert json.loads(last.data)["status"] == "completed"
            with connect_sse(client, "GET", "/v1/jobs", headers={"Last-Event-ID": last.id}
                             ) as source:
                assert source.response.status_code == 200
            time.sleep(0.5)  # several probes, each a SPUBLISH heard back
            assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    finally:
        gateway.stop()
        denied = []
        for node in cluster.nodes:
            with cluster.client(node) as client:
                # Naming a connection is skipped where refused (docs/operations.md).
                denied += [entry["object"] for entry in client.acl_log()
                           if entry.get("username") in users and entry["object"] not in (
                               "client|setname", "client|setinfo")]
                for user in users:
                    client.execute_command("ACL", "DELUSER", user)
    assert denied == [], denied


def test_the_demo_workers_run_on_a_cluster(cluster: EmbeddedCluster) -> None:
    done = _gateway(cluster.url, "demo", "--only-workers", "--workers", "2", "--rate", "10",
                    "--duration", "3", "--tenant", "acme")
    assert done.returncode == 0, done.stdout + done.stderr
    with nodes.sync_client(cluster.url, cluster=True) as client:
        assert client.zcard(keys.index_key("acme")) >= 5


def test_a_gateway_started_before_its_cluster_serves_once_the_cluster_is_up() -> None:
    cluster = EmbeddedCluster(primaries=3)  # its addresses, nothing listening there yet
    gateway = GatewayProcess(cluster.url, {"GATEWAY_REDIS_CLUSTER": "true"})
    try:
        gateway.start(ready=False)  # /healthz: up, though no node answers
        assert httpx.get(f"{gateway.url}/readyz").status_code == 503
        assert httpx.get(f"{gateway.url}/v1/jobs/x").status_code == 503
        cluster.start()
        wait_ready(gateway.url, 30, why=gateway.output)
        with SyncWorker.from_url(cluster.url, cluster=True) as worker:
            worker.create("late")
        answer = httpx.get(f"{gateway.url}/v1/jobs/late")
        assert answer.status_code == 200, (answer.text, gateway.output()[-3000:])
        assert answer.json()["status"] == "queued"
    finally:
        gateway.stop()
        cluster.__exit__(None, None, None)


def test_the_commands_check_the_mode_before_they_write(cluster: EmbeddedCluster) -> None:
    # The node that serves the tenant's own slot would take the change without a MOVED,
    # and publish it where no gateway listens: the command refuses before it writes.
    from redis.crc import key_slot

    node = cluster.owner(key_slot(keys.job_key("default", "x").encode()))
    done = _gateway(f"redis://127.0.0.1:{node.port}", "job", "create", "x", cluster=False)
    assert done.returncode == 2 and "set GATEWAY_REDIS_CLUSTER=true" in done.stderr
    with cluster.client(node) as client:
        assert client.exists(keys.job_key("default", "x")) == 0
    # A user that may not read the slot map is told so, on every node.
    for each in cluster.nodes:
        with cluster.client(each) as client:
            client.execute_command("ACL", "SETUSER", "blind", "reset", "on", ">pw", "~*",
                                   "&*", "+@all", "-cluster")
    try:
        url = ",".join(n.replace("redis://", "redis://blind:pw@")
                       for n in cluster.url.split(","))
        done = _gateway(url, "job", "create", "x")
        assert done.returncode == 2 and "CLUSTER SLOTS" in done.stderr, done.stderr
    finally:
        for each in cluster.nodes:
            with cluster.client(each) as client:
                client.execute_command("ACL", "DELUSER", "blind")
