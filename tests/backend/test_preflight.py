"""Start-up refuses a Redis of the other mode, as it refuses bad credentials."""

from __future__ import annotations

import pytest

from gateway.backend import preflight
from gateway.embedded import EmbeddedCluster, EmbeddedRedis

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_a_mode_that_does_not_match_the_server_is_refused(
    redis_server: EmbeddedRedis,
) -> None:
    assert await preflight.check(redis_server.url, 2) is None
    refusal = await preflight.check(redis_server.url, 2, cluster=True)
    assert refusal is not None and "no cluster node" in refusal
    with EmbeddedCluster(primaries=3) as cluster:
        node = cluster.url.split(",")[0]
        refusal = await preflight.check(node, 2)
        assert refusal is not None and "GATEWAY_REDIS_CLUSTER=true" in refusal
        assert await preflight.check(f"redis://127.0.0.1:1,{cluster.url}", 2,
                                     cluster=True) is None


async def test_a_cluster_of_which_no_node_answers_is_an_outage_not_a_refusal() -> None:
    assert await preflight.check("redis://127.0.0.1:1,127.0.0.1:2", 1, cluster=True) is None
