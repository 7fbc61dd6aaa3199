"""One projector's metrics, and what /livez and /readyz of the projector process read."""

from __future__ import annotations

import time
from collections.abc import Callable

from threadline import metrics
from threadline.batch_consumer import BatchConsumer
from threadline.catalog import PROJECTIONS_DLQ

LAG_INTERVAL = 1.0  # seconds between updates of threadline_consumer_lag


class Instruments:
    """Metrics of ``component``; ``started`` (assigned and seeked) and ``heartbeat`` (the loop's
    last turn) are what the probes read."""

    def __init__(self, component: str, dlq_topic: str = PROJECTIONS_DLQ.name):
        self.component = component
        self.consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, component)
        self.dead_lettered = metrics.Labelled(metrics.DLQ, component)
        self._produced_dlq = metrics.EVENTS_PRODUCED.labels(component, dlq_topic)
        self._batch_seconds = metrics.PROCESSING_SECONDS.labels(component, "batch")
        self.lag = metrics.LagGauge(component)
        self.started = False
        self.heartbeat = time.monotonic()
        self._lag_at = 0.0

    def beat(self, consumer: BatchConsumer, tps, position: Callable) -> None:
        """A turn of the loop: the heartbeat, and at most every LAG_INTERVAL the lag of ``tps``
        (the consumer's last seen end offsets minus ``position(tp)``)."""
        self.heartbeat = now = time.monotonic()
        if now - self._lag_at >= LAG_INTERVAL:
            self._lag_at = now
            self.lag.update_from(tps, consumer.highwater, position)

    def batch_done(self, seconds: float, dead_letters: int) -> None:
        self._batch_seconds.observe(seconds)
        if dead_letters:
            self._produced_dlq.inc(dead_letters)

    def stopped(self) -> None:
        self.started = False
        self.lag.clear()
