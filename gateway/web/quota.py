"""How many streams each tenant holds open on this process (``GATEWAY_MAX_STREAMS_PER_TENANT``).

One tenant's clients, or one runaway page, cannot take a process's every connection and
file descriptor from the others: past the limit a new stream gets 429 with
``Retry-After``, and the streams already open are untouched (docs/api.md, Auth).
"""

from __future__ import annotations

from gateway.web import problems

RETRY_AFTER_SECONDS = 10


class StreamQuota:
    __slots__ = ("_limit", "open")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.open: dict[str, int] = {}

    def take(self, tenant: str) -> None:
        """One more stream of ``tenant``; 429 past the limit. ``give_back`` must follow."""
        count = self.open.get(tenant, 0)
        if count >= self._limit:
            raise problems.too_many_streams(self._limit, RETRY_AFTER_SECONDS)
        self.open[tenant] = count + 1

    def give_back(self, tenant: str) -> None:
        count = self.open[tenant] - 1
        if count:
            self.open[tenant] = count
        else:
            del self.open[tenant]
