"""REDIS_URL's nodes in cluster mode, and the clients of both modes."""

from __future__ import annotations

import pytest
import redis
import redis.cluster

from gateway.backend import nodes
from gateway.embedded import EmbeddedCluster, EmbeddedRedis


def test_later_nodes_take_the_first_ones_credentials_and_options() -> None:
    assert nodes.split("rediss://u:p@a:1/0?ssl_cert_reqs=none, b:2,[::1]:3,redis://c:4") == [
        "rediss://u:p@a:1/0?ssl_cert_reqs=none",
        "rediss://u:p@b:2?ssl_cert_reqs=none",
        "rediss://u:p@[::1]:3?ssl_cert_reqs=none",
        "redis://c:4",
    ]
    assert nodes.split("redis://a:1") == ["redis://a:1"]


@pytest.mark.parametrize("url", ["redis://a:1,", "redis://a:1,b", "redis://a:1,:2",
                                 "redis:///x,b:1", "redis://a:1,redis://"])
def test_a_part_that_is_no_address_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ValueError, match=r"node|host"):
        nodes.split(url)


def test_a_node_url_keeps_everything_but_the_address() -> None:
    assert nodes.node_url("redis://u:p@a:1?ssl_cert_reqs=none", "10.0.0.2", 7001) == (
        "redis://u:p@10.0.0.2:7001?ssl_cert_reqs=none")
    assert nodes.node_url("redis://a:1", "::1", 7001) == "redis://[::1]:7001"


@pytest.mark.timeout(60)
def test_clients_of_both_modes_reach_their_server(redis_server: EmbeddedRedis) -> None:
    with nodes.sync_client(redis_server.url, cluster=False) as client:
        assert isinstance(client, redis.Redis) and client.ping()
    with EmbeddedCluster(primaries=3) as cluster:
        dead = "127.0.0.1:1"  # a node that does not answer: the others do
        with nodes.sync_client(f"{dead},{cluster.url}".replace(dead, "redis://" + dead, 1),
                               cluster=True) as client:
            assert isinstance(client, redis.cluster.RedisCluster)
            assert len(client.get_primaries()) == 3
