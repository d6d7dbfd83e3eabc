"""The Redis boundary: the only code that knows Redis' topology and clients.

``base`` says what the rest of the gateway may ask (the Backend protocol) and what it is
told (the Listener protocol); ``connected`` picks the implementation, the one place that
knows the mode: ``standalone`` on one server (one pub/sub connection, ``subscriber``,
and redis-py for the update script), ``cluster`` on a Valkey/Redis Cluster (redis-py's
cluster client for the update script and the slot map, ``topology`` for where each slot
lives, and ``shards``: one sharded pub/sub connection per primary). Both share
``queries`` (the keyed reads, on the pipelined connections of ``reads``) and
``channels`` (the channel methods); ``connection`` is the RESP connection under them.
Whatever goes wrong reaches callers as BackendUnavailable (Redis unreachable, slow, or
refusing a command: out of memory, no permission) or a ChangeRefused (the update script
said no), never a redis-py exception.
"""

from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.backend.base import Backend, Listener
from gateway.backend.cluster import ClusterBackend
from gateway.backend.standalone import StandaloneBackend


def connected(url: str, *, cluster: bool, **options: Any) -> AbstractAsyncContextManager[Backend]:
    """The backend of ``url`` (a cluster's nodes when ``cluster``), closed at the end of
    the block; ``options`` as StandaloneBackend takes them."""
    if cluster:
        return ClusterBackend.connected(url, **options)
    return StandaloneBackend.connected(url, **options)


__all__ = ["Backend", "ClusterBackend", "Listener", "StandaloneBackend", "connected"]
