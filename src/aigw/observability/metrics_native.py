"""Lock-free stand-ins for prometheus_client's Counter, Gauge and Histogram, for the per-request path.

Every finished request moves a dozen series. prometheus_client takes a lock and
runs checks on each call (about a microsecond each); these keep plain floats,
which is safe because only the event loop's thread touches them (the observe
stage writes, the /metrics handler reads). They register with a
``CollectorRegistry`` like the originals and render the same text.

Single process only: with several workers (``multiprocess_dir`` set) ``Metrics``
uses prometheus_client's own classes, whose values live in shared files.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # le is inclusive, as in Prometheus
        self.sum += amount


class _Family:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new()
        return child

    def _new(self) -> Any:
        return _Value()

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in self._children.items():
            self._add(family, list(values), child)
        yield family

    def _add(self, family: Any, values: list[str], child: Any) -> None:
        family.add_metric(values, child.value)


class FastCounter(_Family):
    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class FastGauge(_Family):
    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class FastHistogram(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
                 buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> Any:
        return _Buckets(self.bounds)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Any, values: list[str], child: Any) -> None:
        cumulative, total = [], 0
        for le, n in zip(self._les, child.counts, strict=True):
            total += n
            cumulative.append((le, total))
        family.add_metric(values, cumulative, sum_value=child.sum)
