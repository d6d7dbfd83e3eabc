"""Two gateway processes on a 3-primary Valkey Cluster: the same promises as on one Redis.

Every scenario ends with the usual check: each client saw versions only go up, and its
last snapshot of every job is the one in Redis. Tenants are picked by the slot of their
hash tag, so that each primary serves one of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest
import redis
import redis.cluster
from conftest import GatewayProcess, tenant_per_shard
from observe import Balancer, Observer, assert_consistent, metric, patiently
from redis.crc import key_slot

from gateway.auth import apikeys
from gateway.auth.principal import Scope
from gateway.backend import nodes
from gateway.contract import keys
from gateway.embedded import EmbeddedCluster
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio

CLUSTER_ENV = {"GATEWAY_REDIS_CLUSTER": "true", "GATEWAY_HEARTBEAT_SECONDS": "0.5",
               "GATEWAY_PROBE_SECONDS": "1", "GATEWAY_HOST": "127.0.0.1"}
# What a worker on a cluster may meet while a slot moves or a primary fails over.
CLUSTER_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
                  redis.exceptions.SlotNotCoveredError, redis.exceptions.TryAgainError)


@pytest.fixture
def cluster_client(cluster: EmbeddedCluster) -> Iterator[redis.cluster.RedisCluster]:
    with nodes.sync_client(cluster.url, cluster=True) as client:
        assert isinstance(client, redis.cluster.RedisCluster)
        yield client


def two_gateways(start_gateway: Callable[..., GatewayProcess],
                 cluster: EmbeddedCluster) -> tuple[GatewayProcess, GatewayProcess]:
    return start_gateway(cluster.url, **CLUSTER_ENV), start_gateway(cluster.url, **CLUSTER_ENV)


def work(url: str, tenant: str, jobs: list[str], step: Callable[[], None],
         stop: threading.Event) -> None:
    """Reports for every job in turn (``step`` after each round), then ends each (a
    failure for every third)."""
    with SyncWorker.from_url(url, cluster=True, tenant=tenant) as worker:
        for percent in range(5, 100, 5):
            for job_id in jobs:
                patiently(lambda j=job_id, p=percent: worker.progress(j, p, phase=f"step {p}"),
                          errors=CLUSTER_ERRORS)
            step()
            if stop.wait(0.05):
                return
        for n, job_id in enumerate(jobs):
            if n % 3 == 0:
                patiently(lambda j=job_id: worker.fail(j, "ffmpeg.invalid_input", "bad"),
                          errors=CLUSTER_ERRORS)
            else:
                patiently(lambda j=job_id: worker.complete(j, file_url=f"https://f.example/{j}"),
                          errors=CLUSTER_ERRORS)


def nothing() -> None:
    pass


def create(url: str, tenant: str, jobs: list[str], *, start: bool = True) -> None:
    with SyncWorker.from_url(url, cluster=True, tenant=tenant) as worker:
        for job_id in jobs:
            worker.create(job_id)
            if start:
                worker.start(job_id)


async def streams_open(url: str, count: int) -> None:
    with anyio.fail_after(15):
        while metric(url, "gateway_open_streams") < count:
            await anyio.sleep(0.05)


def run_workers(targets: list[tuple[str, str, list[str], Callable[[], None]]],
                ) -> tuple[list[threading.Thread], threading.Event]:
    """A thread of ``work`` for each (url, tenant, jobs, step)."""
    stop = threading.Event()
    threads = [threading.Thread(target=work, args=(*args, stop)) for args in targets]
    for thread in threads:
        thread.start()
    return threads, stop


def join(threads: list[threading.Thread], stop: threading.Event) -> None:
    stop.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()


@pytest.mark.timeout(120)
async def test_tenants_on_every_shard_stream_at_once_through_two_processes(
    start_gateway: Callable[..., GatewayProcess], cluster: EmbeddedCluster,
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    tenants = tenant_per_shard(cluster)
    credentials = {t: apikeys.create(cluster_client, t, Scope.READ)[0] for t in tenants}
    a, b = two_gateways(start_gateway, cluster)
    jobs = {t: [f"{t}-job{n}" for n in range(3)] for t in tenants}
    observers: list[tuple[str, Observer]] = []
    for tenant in tenants:
        create(cluster.url, tenant, jobs[tenant])
        auth = {"Authorization": f"Bearer {credentials[tenant]}"}
        observers.append((tenant, Observer(a.url, "/v1/jobs", jobs=set(jobs[tenant]),
                                           headers=auth)))
        first = jobs[tenant][1]
        observers.append((tenant, Observer(b.url, f"/v1/jobs/{first}", jobs={first},
                                           headers=auth)))
    async with anyio.create_task_group() as tg:
        for _, observer in observers:
            tg.start_soon(observer.run, 90)
        await streams_open(a.url, len(tenants))
        await streams_open(b.url, len(tenants))
        threads, stop = run_workers([(cluster.url, t, jobs[t], nothing) for t in tenants])
    join(threads, stop)
    for tenant, observer in observers:
        assert observer.connections == 1
        assert_consistent(observer, cluster_client, sorted(observer.jobs), tenant)
        for job_id in observer.jobs:  # every report, in order, no burst big enough to skip
            assert len(observer.seen[job_id]) >= 10


@pytest.mark.timeout(120)
async def test_a_stream_moves_to_the_other_process_when_the_first_is_killed(
    start_gateway: Callable[..., GatewayProcess], cluster: EmbeddedCluster,
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    a, b = two_gateways(start_gateway, cluster)
    jobs = [f"moved-{n}" for n in range(6)]
    create(cluster.url, "default", jobs)
    async with Balancer([a.port, b.port]) as balancer:
        observer = Observer(balancer.url, "/v1/jobs", jobs=set(jobs))
        single = Observer(balancer.url, f"/v1/jobs/{jobs[1]}", jobs={jobs[1]})
        async with anyio.create_task_group() as tg:
            tg.start_soon(observer.run, 90)
            tg.start_soon(single.run, 90)
            await streams_open(a.url, 2)
            threads, stop = run_workers([(cluster.url, "default", jobs, nothing)])
            with anyio.fail_after(15):
                while not all(len(observer.seen.get(j, [])) > 3 for j in jobs):
                    await anyio.sleep(0.05)
            assert a.process is not None
            a.process.kill()  # mid-stream: no goodbye
            a.process.wait(10)
    join(threads, stop)
    assert observer.connections == single.connections == 2  # on A, then on B
    assert_consistent(observer, cluster_client, jobs)
    assert_consistent(single, cluster_client, [jobs[1]])


@pytest.mark.timeout(120)
async def test_streams_keep_delivering_while_their_tenants_slot_moves(
    start_gateway: Callable[..., GatewayProcess], cluster: EmbeddedCluster,
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    a, b = two_gateways(start_gateway, cluster)
    jobs = [f"slot-{n}" for n in range(4)]
    create(cluster.url, "default", jobs)
    slot = key_slot(keys.tenant_channel("default").encode())
    source = cluster.owner(slot)
    target = next(node for node in cluster.nodes if node is not source)
    observers = [Observer(a.url, "/v1/jobs", jobs=set(jobs)),
                 Observer(b.url, f"/v1/jobs/{jobs[0]}", jobs={jobs[0]})]
    # The slot moves after the workers' first round of reports, key by key, while they
    # go on reporting: a report that meets the slot half moved is retried (TRYAGAIN).
    migration = threading.Thread(target=cluster.migrate, args=(slot, target),
                                 kwargs={"between_keys": lambda: time.sleep(0.05)})

    def migrate_once() -> None:
        if not migration.is_alive() and migration.ident is None:
            migration.start()

    async with anyio.create_task_group() as tg:
        for observer in observers:
            tg.start_soon(observer.run, 90)
        await streams_open(a.url, 1)
        await streams_open(b.url, 1)
        threads, stop = run_workers([(cluster.url, "default", jobs, migrate_once)])
    migration.join(30)
    join(threads, stop)
    assert cluster.owner(slot) is target
    for observer in observers:
        assert_consistent(observer, cluster_client, sorted(observer.jobs))
        assert observer.connections == 1  # the stream itself never broke


@pytest.mark.timeout(150)
async def test_streams_recover_after_a_primary_fails_over(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    with EmbeddedCluster(primaries=3, replicas=1) as cluster, \
            nodes.sync_client(cluster.url, cluster=True) as client:
        tenants = tenant_per_shard(cluster)
        credentials = {t: apikeys.create(client, t, Scope.READ)[0] for t in tenants}
        a, b = two_gateways(start_gateway, cluster)
        jobs = {t: [f"{t}-f{n}" for n in range(3)] for t in tenants}
        observers = []
        for n, tenant in enumerate(tenants):
            create(cluster.url, tenant, jobs[tenant])
            auth = {"Authorization": f"Bearer {credentials[tenant]}"}
            observers.append((tenant, Observer((a, b)[n % 2].url, "/v1/jobs",
                                               jobs=set(jobs[tenant]), headers=auth)))
        victim = cluster.owner(key_slot(keys.tenant_channel(tenants[0]).encode()))
        killed = threading.Event()

        def kill_once() -> None:
            if not killed.is_set():
                killed.set()
                victim.kill()

        async with anyio.create_task_group() as tg:
            for _, observer in observers:
                tg.start_soon(observer.run, 120)
            await streams_open(a.url, 2)
            await streams_open(b.url, 1)
            threads, stop = run_workers(
                [(cluster.url, t, jobs[t], kill_once if t == tenants[0] else nothing)
                 for t in tenants])
            # While that shard fails over, the processes stay ready: the other shards'
            # streams must not leave the load balancer with it.
            with anyio.fail_after(30):
                while not killed.is_set():
                    await anyio.sleep(0.02)
            async with httpx.AsyncClient() as http:
                for _ in range(10):
                    assert (await http.get(f"{a.url}/readyz")).status_code == 200
                    await anyio.sleep(0.05)
        join(threads, stop)
        assert killed.is_set() and cluster.owner(
            key_slot(keys.tenant_channel(tenants[0]).encode())) is not victim
        for tenant, observer in observers:
            assert_consistent(observer, client, sorted(observer.jobs), tenant)
