"""Counters of the stream path, and ``/metrics`` in the Prometheus text format
(docs/operations.md, Metrics).

The hot path only adds to plain integers on ``STATS``; a collector reads them when
Prometheus scrapes, so that counting costs no lock and no call per write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Stats:
    def __init__(self) -> None:
        self.events_sent = 0
        self.bytes_sent = 0
        self.conflated = 0
        self.hub_conflated = 0
        self.slow_disconnects = 0
        self.bad_messages = 0
        self.redis_reconnects = 0
        self.probe_failures = 0


STATS = Stats()

# Publish time (the Redis clock, in the message) to the last write of that message.
FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _StatsCollector(Collector):
    def __init__(self, gauges: Callable[[], dict[str, dict[str, float]]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        counters = {
            "gateway_events_sent": ("Events written to streams", STATS.events_sent),
            "gateway_bytes_sent": ("Event bytes written to streams", STATS.bytes_sent),
            "gateway_conflated_events": (
                "Pending snapshots replaced by a newer one for a slow client", STATS.conflated),
            "gateway_burst_conflated_events": (
                "Messages skipped because a newer one of the same job came in the same read",
                STATS.hub_conflated),
            "gateway_slow_client_disconnects": (
                "Streams closed because a write did not complete in time",
                STATS.slow_disconnects),
            "gateway_bad_messages": ("Malformed messages dropped", STATS.bad_messages),
            "gateway_redis_reconnects": ("Pub/sub reconnections", STATS.redis_reconnects),
            "gateway_probe_failures": (
                "Self-publish probes that did not come back", STATS.probe_failures),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        for name, labelled in self._gauges().items():
            label = "kind" if name == "gateway_open_streams" else None
            family = GaugeMetricFamily(name, name.replace("_", " "),
                                       labels=[label] if label else None)
            for key, amount in labelled.items():
                family.add_metric([key] if label else [], amount)
            yield family


class Metrics:
    """One registry per app, so that tests and several apps in a process stay apart."""

    def __init__(self, gauges: Callable[[], dict[str, dict[str, float]]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(gauges))
        self.fanout_seconds = Histogram(
            "gateway_fanout_latency_seconds",
            "From the update script's publish to the last write of that event",
            buckets=FANOUT_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
