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
from aiokafka.structs import TopicPartition
from faust.types import TP

from threadline import metrics
from threadline.async_producer import keyed_partitioner
from threadline.dlq import Seal, of_read_record
from threadline.errors import FatalError, RetryableError
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


@dataclass(frozen=True)
class Letter:
    """A record a runner read (aiokafka's ``ConsumerRecord``: ``message``) as ``StageContext.to_dlq``
    takes it (faust's event: ``message`` and ``value``)."""

    message: Any
    value: bytes | None


@dataclass
class Outputs:
    """A batch's records to produce, in order: (topic, key, value, headers, partition), and the
    changelog records of its table writes (``write_table``); each topic partition's in order."""

    records: list[tuple[str, bytes, bytes, dict[str, str] | None, int | None]] = field(default_factory=list)
    changelog: list[tuple[Any, int, bytes, bytes]] = field(default_factory=list)  # (table, partition, key, value)
    unsealed: list[int] = field(default_factory=list)  # indexes in ``records`` of dead letters to seal before sending

    def add(self, topic: str, key: bytes, value: bytes, headers: dict[str, str] | None = None) -> None:
        self.records.append((topic, key, value, headers, None))


def write_table(out: Outputs, table: Any, items: dict, source_topic: str, partition: int) -> None:
    """A batch's changed keys of a faust table, each written once: into the table's store as faust
    writes it (RocksDB: the JSON bytes, serialized once here, one write batch per partition; memory:
    the value), and as changelog records on ``partition`` that ``StageContext.produce`` sends. This is
    ``Table.__setitem__`` without its per-record changelog machinery: the same keys and values on
    the same changelog partition, so faust's recovery reads them as its own; the store's persisted
    changelog offset is set once per batch, when the last record is acknowledged."""
    if not items:
        return
    store = table.data
    changelog = out.changelog
    batch = _rocksdb_batch(store)
    if batch is not None:  # RocksDB: the partition's keys in one write batch
        index = store._key_index
        for key, value in items.items():
            kb, vb = orjson.dumps(key), orjson.dumps(value)
            batch.put(kb, vb)
            index[kb] = partition
            changelog.append((table, partition, kb, vb))
        store._db_for_partition(partition).write(batch)
        return
    serialized = isinstance(store, SerializedStore)
    with writing_for(source_topic, partition):
        for key, value in items.items():
            kb, vb = orjson.dumps(key), orjson.dumps(value)
            if serialized:
                store._set(kb, vb)
            else:
                store[key] = value
            changelog.append((table, partition, kb, vb))


def read_table(table: Any, key: Any, source_topic: str, partition: int) -> Any:
    """The value of ``key`` in a faust table, None when absent: from the RocksDB store, one read
    of the JSON bytes ``write_table`` wrote, in ``partition``'s database (the table's own ``get``
    asks whether the key is there, then reads it, in every partition's database when no record is
    being processed); from any other store, the table's ``get``."""
    store = getattr(table, "data", None)
    if not isinstance(store, SerializedStore):
        return table.get(key)
    kb = orjson.dumps(key)
    if _is_rocksdict(store):  # what faust's ``_get`` does for a record of ``partition``, without the event
        raw = store._db_for_partition(partition).get(kb)
        if raw is not None:
            store._key_index[kb] = partition
    else:
        with writing_for(source_topic, partition):
            raw = store._get(kb)
    return None if raw is None else orjson.loads(raw)


def _is_rocksdict(store: Any) -> bool:
    """Whether ``store`` is faust's RocksDB store on rocksdict (the worker's ``store=rocksdb://``)."""
    return type(store).__module__ == "faust.stores.rocksdb" and bool(getattr(store, "use_rocksdict", False))


def _rocksdb_batch(store: Any) -> Any:
    """An empty write batch when ``store`` is faust's RocksDB store on rocksdict (what its own
    changelog recovery writes with, ``apply_changelog_batch``), else None."""
    if not _is_rocksdict(store):
        return None
    import rocksdict

    return rocksdict.WriteBatch(raw_mode=True)


def _persist_offset(table: Any, relative: int):
    """Once the batch holding a table partition's last changelog record of a stage batch is
    acknowledged, the store remembers that record's offset (``relative``: its place in the
    producer batch) as the changelog position it holds."""

    def done(fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # not acknowledged: the store keeps the offset it had; recovery reads from there
        meta = fut.result()
        table.data.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset + relative)

    return done


class _Batches:
    """A stage batch's records as producer batches, one list per topic partition, in order.

    A partition whose previous producer batch is still waiting in the producer (lingering, or
    behind a request in flight) gets its records through the producer's ``send``, appended to that
    batch: ``send_batch`` would wait until it leaves, and the stage with it."""

    def __init__(self, producer: Any):
        self.producer = producer
        self.builders: dict[tuple[str, int], list[Any]] = {}
        self.singles: dict[tuple[str, int], list[tuple[bytes | None, bytes, list]]] = {}
        self.waiting = getattr(getattr(producer, "_message_accumulator", None), "_batches", {})

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: list) -> tuple[int, int]:
        """Where the record's acknowledgment will be: (index in its partition's futures, place of
        the record in that producer batch)."""
        tp = (topic, partition)
        singles = self.singles.get(tp)
        if singles is None and tp not in self.builders and self.waiting.get(TopicPartition(topic, partition)):
            singles = self.singles[tp] = []
        if singles is not None:
            singles.append((key, value, headers))
            return len(singles) - 1, 0
        builders = self.builders.setdefault(tp, [])
        meta = builders[-1].append(timestamp=None, key=key, value=value, headers=headers) if builders else None
        if meta is None:  # none yet, or full: a new one (a record always fits an empty one)
            builders.append(self.producer.create_batch())
            meta = builders[-1].append(timestamp=None, key=key, value=value, headers=headers)
        return len(builders) - 1, meta.offset

    async def send(self) -> dict[tuple[str, int], list[asyncio.Future]]:
        """Hand every record to the producer, each partition's in order, the partitions side by
        side; the futures of their acknowledgments (one per producer batch, or per record sent
        alone)."""
        producer = self.producer

        async def batches(tp: tuple[str, int], builders: list) -> list[asyncio.Future]:
            return [await producer.send_batch(b, tp[0], partition=tp[1]) for b in builders]

        async def singles(tp: tuple[str, int], records: list) -> list[asyncio.Future]:
            if producer._txn_manager is not None:  # a transactional producer: its own checks per record
                return [
                    await producer.send(tp[0], value, key=key, partition=tp[1], headers=headers)
                    for key, value, headers in records
                ]
            # what ``send`` does once the partition is known and the record is bytes: the records go
            # straight to the partition's waiting batch (no metadata wait, serializer, partitioner),
            # appended there as ``add_message`` appends them, with the loop's own future (aiokafka's
            # ``create_future`` looks the loop up again for each record); ``add_message`` itself
            # when there is no such batch or it is full (it waits for room), or the accumulator is
            # closed or failed (it raises)
            acc, where = producer._message_accumulator, TopicPartition(*tp)
            timeout = producer._request_timeout_ms / 1000
            create = asyncio.get_running_loop().create_future
            futures = []
            for key, value, headers in records:
                pending = acc._batches.get(where)
                future = None
                if pending and not acc._closed and acc._exception is None:
                    future = pending[-1].append(key, value, None, _create_future=create, headers=headers)
                if future is None:
                    future = await acc.add_message(where, key, value, timeout, headers=headers)
                futures.append(future)
            return futures

        tps = [*self.builders, *self.singles]
        sent = await asyncio.gather(
            *(batches(tp, b) for tp, b in self.builders.items()),
            *(singles(tp, r) for tp, r in self.singles.items()),
        )
        return dict(zip(tps, sent, strict=True))


class StageContext:
    """The app, its producer and the worker's metrics, as the stages use them (no app: the identity
    stage's runner alone, which has a producer of its own)."""

    def __init__(self, app: faust.App | None, app_id: str, dlq_topic: str, seal: Seal | None = None):
        self.app = app
        self.app_id = app_id
        self.dlq_topic = dlq_topic
        # privacy on: dead letters sealed under keys of their own, as ingest.dlq.v1's
        # (schemas.keystore.dlq_sealer), in ``produce``, off the event loop
        self.seal = seal
        self.consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, COMPONENT)
        self.produced = metrics.Labelled(metrics.EVENTS_PRODUCED, COMPONENT)
        self.dead_lettered = metrics.Labelled(metrics.DLQ, COMPONENT)
        self._partitions: dict[str, list[int]] = {}  # a topic's partitions, looked up once

    async def produce(self, outputs: Outputs) -> None:
        """Hand a batch's records to the producer, in order within each topic partition (faust
        flushes the producer before it commits the inputs' offsets).

        The records go as producer batches (aiokafka's ``create_batch``/``send_batch``), not one
        ``send`` each: no future, metadata wait and accumulator step per record. A record without
        a partition goes where aiokafka's default partitioner would put its key
        (``keyed_partitioner``: Java's murmur2, each key's hash remembered)."""
        if outputs.unsealed:
            await self._seal(outputs)
        assert self.app is not None, "a stage without a faust app produces through its own producer"
        producer = self.app.producer._ensure_producer()
        batches = _Batches(producer)
        last: dict[tuple[Any, int], tuple[str, int, int, int]] = {}  # (table, partition) -> where its last record is
        for table, partition, kb, vb in outputs.changelog:
            topic = table.changelog_topic.get_topic_name()
            at = batches.append(topic, partition, kb, vb, [])
            last[(table, partition)] = (topic, partition, *at)
        outputs.changelog.clear()
        counts: dict[str, int] = {}
        for topic, key, value, headers, partition in outputs.records:
            if partition is None:
                partition = await self._partition(producer, topic, key)
            batches.append(topic, partition, key, value, header_list(headers))
            counts[topic] = counts.get(topic, 0) + 1
        outputs.records.clear()
        futures = await batches.send()
        for (table, _p), (topic, partition, index, relative) in last.items():
            futures[(topic, partition)][index].add_done_callback(_persist_offset(table, relative))
        for topic, n in counts.items():
            self.produced(topic).inc(n)

    async def _partition(self, producer: Any, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            await producer.client._wait_on_metadata(topic)
            partitions = sorted(producer.client.cluster.partitions_for_topic(topic) or ())
            if not partitions:
                raise FatalError(f"no partitions known for topic {topic}")
            self._partitions[topic] = partitions
        if key is None:
            available = sorted(producer.client.cluster.available_partitions_for_topic(topic) or partitions)
            return keyed_partitioner(None, partitions, available)
        return keyed_partitioner(key, partitions, partitions)

    def to_dlq(self, outputs: Outputs, event: Any, reason: str) -> None:
        """A record that cannot be processed, to the DLQ with the batch's records (sealed in
        ``produce`` when privacy is on: the stages are synchronous, the key store is not)."""
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
        if self.seal is not None:
            outputs.unsealed.append(len(outputs.records))
        outputs.add(self.dlq_topic, letter.key, letter.value, letter.headers)

    async def _seal(self, outputs: Outputs, max_delay: float = 10.0) -> None:
        """Seal the batch's dead letters (the key store asked in a thread). The key store down:
        asked again with backoff, the batch not produced meanwhile (its offsets do not move), as
        with Kafka down; never an unsealed dead letter, never a stopped consumer."""
        assert self.seal is not None
        seal, records = self.seal, outputs.records
        for index in outputs.unsealed:
            topic, key, value, headers, partition = records[index]
            delay = 0.5
            while True:
                try:
                    sealed, named = await asyncio.to_thread(seal, value)
                    break
                except RetryableError as exc:
                    log.warning("dlq_seal_waiting", topic=topic, error=type(exc).__name__, retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, max_delay)
            records[index] = (topic, key, sealed, {**(headers or {}), **named}, partition)
        outputs.unsealed.clear()

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
