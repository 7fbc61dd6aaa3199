"""The Prometheus metrics of every component, defined once (docs/operations.md lists them).

Each component labels what it counts with its own ``component`` (``gateway``, ``api``, ``worker``,
``projector:<name>``) and serves the process's registry on ``/metrics``. Hot paths hold on to
label children through ``Labelled`` instead of resolving labels per record or per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Per record (worker agents, ~0.1 ms) to per batch (projectors, up to seconds).
PROCESSING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_CONSUMED = Counter("threadline_events_consumed", "Records read from a topic", ["component", "topic"])
EVENTS_PRODUCED = Counter(
    "threadline_events_produced", "Records handed to the producer for a topic", ["component", "topic"]
)
PROCESSING_SECONDS = Histogram(
    "threadline_processing_seconds",
    "Processing time: per record for the worker's agents, per batch for projectors",
    ["component", "stage"],
    buckets=PROCESSING_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "threadline_consumer_lag",
    "Records on a partition not yet processed (end offset - position)",
    ["component", "topic", "partition"],
)
DLQ = Counter(
    "threadline_dlq",
    "Records sent to a dead-letter topic, by the topic they came from (the gateway: the topic they were meant for)",
    ["component", "topic"],
)
SLA = Counter("threadline_sla", "SLA clock events the worker emitted", ["event", "channel"])
HTTP_REQUESTS = Counter(
    "threadline_http_requests", "HTTP requests answered, by route template", ["app", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "threadline_http_request_seconds",
    "HTTP request time, by route template",
    ["app", "method", "route"],
    buckets=HTTP_BUCKETS,
)
GATEWAY_CONTACTS = Counter(
    "threadline_gateway_contacts",
    "Contacts by connector: accepted (acknowledged by Kafka), dead_lettered, rejected "
    "(request refused with 4xx), unacknowledged (503)",
    ["connector", "outcome"],
)
READY = Gauge(
    "threadline_ready", "1 when the component's last check of the dependency passed", ["component", "dependency"]
)

ALL: tuple[MetricWrapperBase, ...] = (
    EVENTS_CONSUMED,
    EVENTS_PRODUCED,
    PROCESSING_SECONDS,
    CONSUMER_LAG,
    DLQ,
    SLA,
    HTTP_REQUESTS,
    HTTP_SECONDS,
    GATEWAY_CONTACTS,
    READY,
)
SLA_EVENTS = {"sla_started": "started", "sla_hit": "hit", "sla_breached": "breached", "sla_withdrawn": "withdrawn"}
UNMATCHED_ROUTE = "<unmatched>"  # requests no route took: one series, whatever the path

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def series_names() -> dict[str, tuple[str, ...]]:
    """Every sample name the metrics above expose, with the labels it carries (``le`` on buckets)."""
    out: dict[str, tuple[str, ...]] = {}
    for m in ALL:
        for suffix in _SUFFIXES[str(m._type)]:
            out[m._name + suffix] = tuple(m._labelnames) + (("le",) if suffix == "_bucket" else ())
    return out


class Labelled:
    """The children of one metric with the leading label values fixed, cached by the rest:
    ``consumed = Labelled(EVENTS_CONSUMED, "worker"); consumed("contacts.v1").inc()``."""

    __slots__ = ("metric", "fixed", "children")

    def __init__(self, metric: MetricWrapperBase, *fixed: str):
        self.metric, self.fixed = metric, fixed
        self.children: dict[tuple[object, ...], MetricWrapperBase] = {}

    def __call__(self, *values):
        try:
            return self.children[values]
        except KeyError:
            child = self.children[values] = self.metric.labels(*self.fixed, *(str(v) for v in values))
            return child


def lag(end_offset: int | None, position: int | None) -> int | None:
    """Records between the consumer's position (next offset it will process) and the end offset
    (next offset to be written); None while either is unknown."""
    if end_offset is None or position is None:
        return None
    return max(0, end_offset - position)


class LagGauge:
    """``threadline_consumer_lag`` of one component: ``update`` sets every partition it was given
    and removes the series of partitions it no longer has (after a rebalance)."""

    def __init__(self, component: str):
        self.component = component
        self.current: set[tuple[str, int]] = set()

    def update(self, lags: Mapping[tuple[str, int], int | None]) -> None:
        known = {tp: n for tp, n in lags.items() if n is not None}
        for topic, partition in self.current - known.keys():
            try:
                CONSUMER_LAG.remove(self.component, topic, str(partition))
            except KeyError:
                pass
        for (topic, partition), n in known.items():
            CONSUMER_LAG.labels(self.component, topic, str(partition)).set(n)
        self.current = set(known)

    def update_from(self, tps: Iterable, end_offset, position) -> None:
        """Lag of each (topic, partition) from ``end_offset(tp)`` and ``position(tp)``; a partition
        whose offsets cannot be had right now (revoked meanwhile) is left out."""
        lags = {}
        for tp in tps:
            try:
                lags[(tp.topic, tp.partition)] = lag(end_offset(tp), position(tp))
            except Exception:  # counting must never stop the work it counts
                continue
        self.update(lags)

    def clear(self) -> None:
        self.update({})


def sample_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` in an exposition
    (0 when there are none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def exposition() -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY)
