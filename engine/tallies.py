"""Prometheus counters, gauges and histograms that cost a few additions to update.

prometheus_client's metrics take a lock on every update (they are safe across
threads), and a worker updates its own several times per step, from one
event-loop thread: with many sagas in flight those updates were 5 % of a
worker's CPU. These keep plain numbers and turn them into metric families
only when Prometheus scrapes (each is a collector of its registry). They
expose the same names and samples as prometheus_client's classes (without
the ``_created`` samples).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Bucket bounds as Prometheus writes them: "0.005", "1.0", "+Inf".
_bound_text: Callable[[float], str] = utils.floatToGoString


class Series:
    """One label set of a counter or gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (gauges)."""
        self.value -= amount


class Buckets:
    """One label set of a histogram: a count per bucket and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is >= it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """The ``le`` buckets as Prometheus shows them (counts up to each bound)."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((_bound_text(bound), total))
        return out


S = TypeVar("S", Series, Buckets)


class _Metric(Collector, Generic[S]):
    """What the kinds share: a name, help text, label names and the series by label
    values (the unlabelled one made at once); registered with ``registry`` at once."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        self._plain: S = self._new_series()
        if not self.labelnames:
            self._series[()] = self._plain
        registry.register(self)

    def _new_series(self) -> S:
        raise NotImplementedError

    def labels(self, *values: str) -> S:
        """The series of these label values (created at first use)."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            series = self._series[values] = self._new_series()
        return series


class Tally(_Metric[Series]):
    """A counter (``gauge=True``: a gauge), with or without labels."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
        gauge: bool = False,
    ) -> None:
        self.gauge = gauge
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_series(self) -> Series:
        return Series()

    def inc(self, amount: float = 1.0) -> None:
        """Add to the unlabelled series."""
        self._plain.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract from the unlabelled series (gauges)."""
        self._plain.value -= amount

    def collect(self) -> Iterator[Metric]:
        """The family as Prometheus reads it."""
        family: CounterMetricFamily | GaugeMetricFamily
        if self.gauge:
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        else:
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        yield family


class Histogram(_Metric[Buckets]):
    """A histogram with fixed bucket bounds, with or without labels."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_series(self) -> Buckets:
        return Buckets(self.bounds)

    def observe(self, value: float) -> None:
        """Observe in the unlabelled series."""
        self._plain.observe(value)

    def collect(self) -> Iterator[Metric]:
        """The family as Prometheus reads it."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.cumulative(), sum_value=series.sum)
        yield family
