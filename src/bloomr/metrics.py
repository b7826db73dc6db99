"""Prometheus metrics, read from the node's own state when scraped: nothing on the
publish or fan-out path does more than add to an integer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import Message


@dataclass(slots=True)
class Counters:
    """Running totals the node keeps as it works (a hub listener counts publishes)."""

    published: int = 0
    publish_batches: int = 0

    def on_repeated(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        pass  # counted the first time

    def on_published(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        self.published += len(messages)
        self.publish_batches += 1

    def on_stream_deleted(self, stream_id: str) -> None:
        pass


Gauge = Callable[[], float]


class NodeCollector(Collector):
    """Counters and gauges, each read by a function when scraped."""

    def __init__(
        self, counters: dict[str, tuple[str, Gauge]], gauges: dict[str, tuple[str, Gauge]]
    ) -> None:
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, read) in self.counters.items():
            yield CounterMetricFamily(name, help_text, value=read())
        for name, (help_text, read) in self.gauges.items():
            yield GaugeMetricFamily(name, help_text, value=read())


def registry_for(collector: NodeCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
