"""What every stage shares: batches taken from a faust stream, outputs produced as a batch, the
DLQ, metrics, and table writes made for a partition outside faust's per-record iteration.

Each stage takes its input in batches (``take_events``: up to ``BATCH_MAX`` records, or what
arrived within ``BATCH_WITHIN`` seconds), applies the pure rules to the whole batch, writes each
changed table key once, then hands its outputs to the producer in order. faust acks the batch's
records only after the stage asked for the next batch, so a crash mid-batch redelivers the whole
batch (at-least-once; every output is the same for a redelivered input).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.stores.base import SerializedStore
from faust.streams import _current_event  # the record a table write belongs to (its partition)
from faust.types import TP

from threadline import metrics
from threadline.dlq import of_read_record
from threadline.errors import FatalError
from threadline.kafka import header_list
from threadline.logging import get_logger

log = get_logger("threadline.streams")

COMPONENT = "worker"  # the ``component`` label of the worker's metrics
# A record that fails to decode or that the rules cannot process goes to the DLQ with the reason:
# whatever the failure of that one record, the partition moves on and the worker keeps running.
DECODE_ERRORS = (FatalError, ValueError, KeyError, TypeError, AttributeError, IndexError)
BATCH_MAX = 1000  # records per batch at most
BATCH_WITHIN = 0.01  # seconds a stage waits for a batch to fill before it processes what it has


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


@dataclass(frozen=True)
class _PartitionEvent:
    """Stands for a record of ``topic``/``partition`` when a table is written outside faust's
    iteration over that partition's records (a clock advanced by the timer, a batch's writes)."""

    message: _Message


@contextmanager
def writing_for(topic: str, partition: int) -> Iterator[None]:
    """Table writes inside go to ``partition`` (changelog partition, RocksDB column), as if made
    while faust processed a record of ``topic``/``partition``."""
    stand_in = _PartitionEvent(_Message(topic, partition))
    token = _current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass
class Outputs:
    """A batch's records to produce, in order: (topic, key, value, headers, partition), and the
    changelog records of its table writes, produced first (``write_table``)."""

    records: list[tuple[str, bytes, bytes, dict[str, str] | None, int | None]] = field(default_factory=list)
    changelog: list[tuple[Any, int, bytes, bytes]] = field(default_factory=list)  # (table, partition, key, value)

    def add(self, topic: str, key: bytes, value: bytes, headers: dict[str, str] | None = None) -> None:
        self.records.append((topic, key, value, headers, None))


def write_table(out: Outputs, table: Any, items: dict, source_topic: str, partition: int) -> None:
    """A batch's changed keys of a faust table, each written once: into the table's store as faust
    writes it (RocksDB: the JSON bytes, serialized once here; memory: the value), and as changelog
    records on ``partition`` that ``StageContext.produce`` sends before the batch's outputs. This is
    ``Table.__setitem__`` without its per-record changelog machinery: the same keys and values on
    the same changelog partition, so faust's recovery reads them as its own; the store's persisted
    changelog offset is set once per batch, when the last record is acknowledged."""
    if not items:
        return
    store = table.data
    serialized = isinstance(store, SerializedStore)
    with writing_for(source_topic, partition):
        for key, value in items.items():
            kb, vb = orjson.dumps(key), orjson.dumps(value)
            if serialized:
                store._set(kb, vb)
            else:
                store[key] = value
            out.changelog.append((table, partition, kb, vb))


def _persist_offset(table: Any):
    def done(fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # not acknowledged: the store keeps the offset it had; recovery reads from there
        meta = fut.result()
        table.data.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset)

    return done


class StageContext:
    """The app, its producer and the worker's metrics, as the stages use them."""

    def __init__(self, app: faust.App, app_id: str, dlq_topic: str):
        self.app = app
        self.app_id = app_id
        self.dlq_topic = dlq_topic
        self.consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, COMPONENT)
        self.produced = metrics.Labelled(metrics.EVENTS_PRODUCED, COMPONENT)
        self.dead_lettered = metrics.Labelled(metrics.DLQ, COMPONENT)

    async def produce(self, outputs: Outputs) -> None:
        """Hand a batch's records to the producer, in order (faust flushes the producer before it
        commits the inputs' offsets)."""
        send = self.app.producer.send
        counts: dict[str, int] = {}
        last: dict[tuple[Any, int], asyncio.Future] = {}
        for table, partition, kb, vb in outputs.changelog:
            last[(table, partition)] = await send(table.changelog_topic.get_topic_name(), kb, vb, partition, None, [])
        for (table, partition), fut in last.items():
            fut.add_done_callback(_persist_offset(table))
        outputs.changelog.clear()
        for topic, key, value, headers, partition in outputs.records:
            await send(topic, key, value, partition, None, header_list(headers))
            counts[topic] = counts.get(topic, 0) + 1
        for topic, n in counts.items():
            self.produced(topic).inc(n)
        outputs.records.clear()

    def to_dlq(self, outputs: Outputs, event: Any, reason: str) -> None:
        msg = event.message
        self.dead_lettered(msg.topic).inc()
        letter = of_read_record(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            value=event.value,
            reason=reason,
            component=self.app_id,
        )
        outputs.add(self.dlq_topic, letter.key, letter.value, letter.headers)

    def batches(self, stream: faust.StreamT, stage: str):
        """The stream's events in batches, each counted per topic; each batch timed from its
        arrival in the stage to the stage asking for the next one, and every record of it observed
        with its share of that time (threadline_processing_seconds stays per record)."""
        seconds = metrics.PROCESSING_SECONDS.labels(COMPONENT, stage)
        consumed = self.consumed

        async def gen():
            async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
                counts: dict[str, int] = {}
                for e in events:
                    counts[e.message.topic] = counts.get(e.message.topic, 0) + 1
                for topic, n in counts.items():
                    consumed(topic).inc(n)
                t0 = time.perf_counter()
                yield events
                each = (time.perf_counter() - t0) / len(events)  # a record's share of its batch's time
                for _ in events:
                    seconds.observe(each)

        return gen()
