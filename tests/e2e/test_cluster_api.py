"""The API's end-to-end tests again, on a 3-primary Valkey Cluster: every test of the
single-server modules below that needs nothing but a gateway and a worker runs here too,
unchanged, with the gateway in cluster mode and the worker on the cluster. The same
client-facing behaviour, on either topology."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_actions
import test_job_json
import test_job_stream
import test_multistream
from conftest import GatewayProcess

from gateway.embedded import EmbeddedCluster
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess],
            cluster: EmbeddedCluster) -> GatewayProcess:
    return start_gateway(cluster.url, GATEWAY_REDIS_CLUSTER="true",
                         GATEWAY_HEARTBEAT_SECONDS="0.5")


@pytest.fixture
def worker(cluster: EmbeddedCluster) -> Iterator[SyncWorker]:
    with SyncWorker.from_url(cluster.url, cluster=True) as w:
        yield w


def _gateway_and_worker_only(function: Any) -> bool:
    return set(inspect.signature(function).parameters) <= {"gateway", "worker"}


for _module in (test_actions, test_job_json, test_job_stream, test_multistream):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and callable(_test) and _gateway_and_worker_only(_test):
            globals()[_name] = _test
