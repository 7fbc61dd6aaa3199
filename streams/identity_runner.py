"""The identity stage's runner: the graph topic read with aiokafka's batch API, not faust's
per-record consume path.

The graph has one partition and one writer (``streams.identity``), so the stage needs none of
faust's machinery for many partitions: it is a consumer of its own group (``identity_group``:
the worker's app id + ``-identity``; every worker running the stage joins it, one of them is
given the partition), a producer, and two tables (the graph: ``GraphTable``, its records held
parsed, each changed record's JSON made once per batch; the contacts' bytes: ``StateTable``),
each in a local store (``streams.identity_store``: RocksDB in the worker's data dir, as
faust's tables; memory with ``THREADLINE_STREAMS_STORE=memory``) behind a bounded cache, with a
changelog topic each, written by the runner itself.

A batch (``getmany``, up to ``BATCH_MAX`` records) goes through the stage's rules
(``IdentityStage.process``: the same rules, outputs and DLQ as before); then, in this order:

1. the batch's outputs (contacts.resolved.v1, identities.v1, moved commands, dead letters) and
   each changed table key once (its changelog record, headed ``writer``) are handed to the
   producer, as producer batches, one per topic partition;
2. every one of them is acknowledged by the broker (acks=all) — the runner waits for them;
3. the acknowledged changelog records go to each table's store, in one write batch with the
   offset of the changelog's last one and the fence writer in force;
4. only then is the input's offset committed, with the group generation the batch was read in
   (a worker that has lost the partition gets CommitFailedError and writes nothing more);
5. the stores mark that offset verified.

A crash anywhere before 4 redelivers the batch; the rules give the same outputs for the same
inputs, and a contact the graph has seen is a duplicate that changes no state: a store that
already holds the batch (a crash between 3 and 4) is not changed by it again, a store behind its
changelog (a crash before 3) reads the rest at the next assignment. The broker not taking the
batch at 1-2 (down, unreachable, a timeout) stops neither the stage nor the worker: the tables'
caches, which hold the batch's changes, are dropped (the stores hold the state before it), and the
batch is read again from its first record after a pause that doubles up to ``RETRY_MOST``
seconds (``_produce_failed``).

Recovery and fencing. When the partition is assigned, the runner writes a *fence* record to each
changelog (key ``["fence", writer]``, writer = the group member id and generation), waits for
its acknowledgment, then brings each store to that fence (``_recover``): the changelog read from
after the offset the store recorded (a fresh store: from the beginning), with the fence rules
(``FencedReplay``) from the writer the store recorded. From a fence on, records headed by another
writer are skipped on every replay: a worker that lost the partition (a long pause past the
session timeout) and writes before it learns so cannot change the state the next owner, or any
later one, recovers. Records without a ``writer`` header (the changelogs faust's tables wrote
before, erasure's tombstones) always apply. A store holding a batch past its verified offset (the
worker died between 3 and 5, or its commit failed) is rebuilt from the changelog's beginning if
any fence came among that batch's records (it may hold writes every replay skips), kept otherwise
(``streams.identity_store`` explains why a successful commit verifies). The same worker stops
writing as soon as the revocation reaches it: the rebalance waits for the batch in flight
(``_lock``). Given the partition back with nobody's changelog record after its own last one, a
worker reads nothing but its new fence.

Upgrading from the faust agent: the stage's group has no committed offset yet, so the runner
starts where the worker's faust group (the app id) had committed the graph topic, not at its
beginning (``start_offset``); the changelogs are the ones faust's tables wrote, read as they are
into a fresh store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from mode import Service

from schemas.codec import Codec
from streams.identity import IdentityGraph
from streams.identity_stage import GraphTable, IdentityStage, StateTable
from streams.identity_store import FencedReplay, MemoryStore, Position, RocksStore, TableStore, is_fence
from streams.rules import IdentityRules
from streams.stage import BATCH_MAX, COMPONENT, Outputs, StageContext, log
from streams.topology import StreamTopics
from threadline import metrics
from threadline.async_producer import keyed_partitioner
from threadline.settings import Settings

WRITER_HEADER = "writer"
POLL_MS = 200  # how long a getmany waits for records when there are none
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds before a batch the broker did not take is read again
CONTACTS_KEPT = 10_000  # the contacts table's cache: parsed values kept between batches at most
MAX_BATCH_BYTES = 1_000_000  # a producer batch (one topic partition's records of a stage batch) at most


def identity_group(app_id: str) -> str:
    """The consumer group of the identity stage of the workers of ``app_id``."""
    return f"{app_id}-identity"


def fence_key(writer: str) -> bytes:
    return orjson.dumps(["fence", writer])


def replay(records: Iterable[tuple[bytes, bytes | None, bytes | None]], table: StateTable | GraphTable) -> int:
    """Apply a changelog's records, in offset order, to the records ``table`` holds (``restore``:
    the graph's table parses each value into its record): each ``(key, value, writer)``, a None
    value deleting the key, with the fence rules (``FencedReplay``); a record the table has no
    place for is skipped too. Returns how many were. (The runner's recovery writes the stores.)"""
    fenced = FencedReplay()
    restore = table.restore
    skipped = 0
    for key, value in fenced.apply(records):
        if not restore(orjson.loads(key), None if value is None else orjson.loads(value)):
            skipped += 1
    return fenced.skipped + skipped


@dataclass(frozen=True)
class Recovered:
    """One table's recovery: the first changelog offset read, how many records were read, how
    many of them the fence rules skipped, whether the local store was rebuilt from nothing."""

    from_offset: int
    read: int
    skipped: int
    rebuilt: bool


class IdentityRunner(Service):
    """The identity stage as a service of the worker's app: started once the app is, stopped
    with it (``streams.app.create_app``)."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        names: StreamTopics,
        ctx: StageContext,
        codec: Codec,
        rules: IdentityRules,
        store_dir: Path | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.settings, self.app_id, self.names, self.ctx = settings, app_id, names, ctx
        self.store_dir = store_dir  # None: the tables' stores are in memory

        def store(topic: str) -> TableStore:
            return RocksStore(store_dir / f"{topic}.db") if store_dir is not None else MemoryStore()

        self.graph_table = GraphTable(names.graph_changelog, store(names.graph_changelog))
        # a contact's bytes are read again only when a merge or an unmerge moves it: few kept
        self.contacts_table = StateTable(names.contacts_changelog, store(names.contacts_changelog), CONTACTS_KEPT)
        self.tables: tuple[GraphTable | StateTable, ...] = (self.graph_table, self.contacts_table)
        self.stage = IdentityStage(ctx, codec, names, IdentityGraph(self.graph_table, rules), self.contacts_table)
        self.group = identity_group(app_id)
        self.consumer: Any = None
        self.producer: Any = None
        self.writer: bytes | None = None  # set while this worker owns the partition and its tables are recovered
        self._lock = asyncio.Lock()  # held by a batch from its processing to its commit, and by a rebalance
        self._partitions: dict[str, list[int]] = {}
        self._start_at: dict[Any, int] = {}  # partition -> offset taken over from the faust group
        self.batches = 0
        self._retry_in = RETRY_FIRST
        self.pause = 0.0  # seconds to wait before the next fetch (a batch the broker did not take)
        self.seconds = metrics.PROCESSING_SECONDS.labels(COMPONENT, "identity")
        self.lag = metrics.LagGauge(COMPONENT)  # threadline_consumer_lag of the graph's partition, while owned

    # -- life cycle -------------------------------------------------------------------------

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from threadline.kafka import aiokafka_config

        cfg = aiokafka_config(self.settings)
        self.producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=False,  # docs/design.md, known pitfalls; duplicates are harmless here
            linger_ms=5,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_BATCH_BYTES + 100_000,
            partitioner=keyed_partitioner,
            client_id=f"{self.app_id}-identity",
            **cfg,
        )
        self.consumer = AIOKafkaConsumer(
            group_id=self.group,
            # the partition stays with its owner when workers join or leave: no needless recovery
            partition_assignment_strategy=(StickyPartitionAssignor,),
            client_id=f"{self.app_id}-identity",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_MAX,
            session_timeout_ms=int(self.settings.streams.session_timeout * 1000),
            heartbeat_interval_ms=min(3000, int(self.settings.streams.session_timeout * 1000 / 3)),
            **cfg,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.names.graph], listener=_Listener(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        self.writer = None
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        for table in self.tables:
            table.store.close()

    @property
    def ready(self) -> str | None:
        """Why the stage is not ready, or None: its consumer has joined its group."""
        if self.consumer is None:
            return "the identity stage is starting"
        generation = getattr(self.consumer._coordinator, "generation", -1)
        if generation is None or generation < 0:
            return f"the identity stage has not joined group {self.group} yet"
        return None

    # -- the partition assigned and revoked -------------------------------------------------

    async def assigned(self, partitions: set) -> None:
        async with self._lock:
            if not partitions:
                return
            self._start_at = {}
            for tp in partitions:
                offset = await self.start_offset(tp)
                if offset is not None:
                    # applied to the first batch (aiokafka resets a partition without a commit to
                    # auto_offset_reset after this callback: a seek here does not hold)
                    self._start_at[tp] = offset
            coordinator = self.consumer._coordinator
            writer = f"{coordinator.member_id}/{coordinator.generation}".encode()
            t0 = time.perf_counter()
            fences = {table.topic: await self._fence(table, writer) for table in self.tables}
            done = {}
            for table in self.tables:
                table.clear()
                done[table.topic] = await self._recover(table, fences[table.topic], writer)
            self.writer = writer
            log.info(
                "identity_state_recovered",
                group=self.group,
                generation=coordinator.generation,
                graph_keys=len(self.graph_table),
                contacts=len(self.contacts_table),
                # per changelog: the first offset read (what the local store had not), how many
                # records were read up to this worker's fence, whether the store was rebuilt
                from_offsets={topic: r.from_offset for topic, r in done.items()},
                read_records=sum(r.read for r in done.values()),
                rebuilt=[topic for topic, r in done.items() if r.rebuilt],
                skipped_records=sum(r.skipped for r in done.values()),
                seconds=round(time.perf_counter() - t0, 3),
            )

    async def start_offset(self, tp: Any) -> int | None:
        """Where to start ``tp`` when this group has never committed it: the offset the faust group
        of the same app id committed (the identity stage was a faust agent there), if any."""
        if await self.consumer.committed(tp) is not None:
            return None
        from aiokafka.admin import AIOKafkaAdminClient

        from threadline.kafka import aiokafka_config

        admin = AIOKafkaAdminClient(**aiokafka_config(self.settings))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.app_id, partitions=[tp])
        finally:
            await admin.close()
        meta = offsets.get(tp)
        if meta is None or meta.offset < 0:
            return None
        log.info("identity_offset_taken_over", group=self.group, from_group=self.app_id, offset=meta.offset)
        return meta.offset

    async def revoked(self) -> None:
        async with self._lock:  # a batch in flight finishes (commit included) before the partition goes
            self.writer = None
            self._start_at = {}
            self.lag.update({})
            for table in self.tables:  # the caches go; the stores stay, with their positions
                table.clear()

    async def _fence(self, table: StateTable | GraphTable, writer: bytes) -> int:
        """Write this writer's fence to the table's changelog; its offset once acknowledged."""
        meta = await (
            await self.producer.send(
                table.topic,
                key=fence_key(writer.decode()),
                value=orjson.dumps({"writer": writer.decode(), "at_ms": int(time.time() * 1000)}),
                partition=0,
                headers=[(WRITER_HEADER, writer)],
            )
        )
        return meta.offset

    async def _recover(self, table: StateTable | GraphTable, fence_offset: int, writer: bytes) -> Recovered:
        """The table's store brought to this writer's fence (at ``fence_offset``): the changelog read
        from after the store's position (``Position``; from its beginning for a fresh store) up to the
        fence, with the fence rules from the writer the store recorded (``FencedReplay``), written to
        the store in one write per chunk read, with the offset of its last record."""
        store = table.store
        pos = store.position()
        rebuilt = False
        if pos.offset >= fence_offset:  # a store ahead of the changelog is not of this topic's changelog
            rebuilt = True
        read = 0
        if not rebuilt and pos.verified < pos.offset:
            # The store holds records past the last verified commit: if anyone's fence came before
            # them, the store may hold writes every replay skips (this worker had lost the partition).
            async for records in self._read(table.topic, pos.verified + 1, pos.offset):
                read += len(records)
                if any(is_fence(r.key) for r in records):
                    rebuilt = True
        if rebuilt:
            log.warning("identity_store_rebuilt", table=table.topic, offset=pos.offset, verified=pos.verified)
            store.reset()
            pos = Position()
        fenced = FencedReplay(pos.writer)
        start = pos.offset + 1
        if start == fence_offset:  # nothing but this writer's own fence since the store's last write
            store.write((), fence_offset, writer, verified=True)
            return Recovered(start, read, 0, rebuilt)
        async for records in self._read(table.topic, start, fence_offset):
            read += len(records)
            items = list(fenced.apply((r.key, r.value, dict(r.headers or ()).get(WRITER_HEADER)) for r in records))
            store.write(items, records[-1].offset, fenced.writer, verified=True)
        return Recovered(start, read, fenced.skipped, rebuilt)

    async def _read(self, topic: str, start: int, end: int) -> AsyncIterator[list]:
        """The records of the changelog ``topic`` from offset ``start`` to ``end`` (included), a
        chunk (one getmany) at a time."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        from threadline.kafka import aiokafka_config

        reader = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.app_id}-identity-recovery",
            **aiokafka_config(self.settings),
        )
        await reader.start()
        try:
            tp = TopicPartition(topic, 0)
            reader.assign([tp])
            reader.seek(tp, start)
            while await reader.position(tp) <= end:
                got = await reader.getmany(tp, timeout_ms=1000, max_records=10_000)
                records = [r for r in got.get(tp, ()) if r.offset <= end]
                if records:
                    yield records
        finally:
            await reader.stop()

    # -- the batches ------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self.consumer
        while not self.should_stop:
            got = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_MAX)
            for tp, records in got.items():
                if records:
                    await self._batch(tp, records)
                if self.pause:
                    await asyncio.sleep(self.pause)
                    self.pause = 0.0

    async def _batch(self, tp: Any, records: list) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError
        from aiokafka.structs import OffsetAndMetadata

        async with self._lock:
            writer = self.writer
            if writer is None or tp not in self.consumer.assignment():
                return  # revoked since the fetch: the partition's next owner reads these again
            start = self._start_at.pop(tp, None)
            if start is not None:  # what the faust group had processed is not read again
                if records[-1].offset < start:
                    self.consumer.seek(tp, start)
                    return
                records = [r for r in records if r.offset >= start]
            t0 = time.perf_counter()
            self.ctx.consumed(tp.topic).inc(len(records))
            out = Outputs()
            self.stage.process(records, out)
            changelog = [
                (table, [(orjson.dumps(k), orjson.dumps(v)) for k, v in table.take_dirty().items()])
                for table in self.tables
            ]
            # 1. outputs and changelog records to the producer; 2. every acknowledgment awaited
            try:
                last = await self._produce(out, changelog, writer)
            except (KafkaError, asyncio.TimeoutError) as exc:
                self._produce_failed(tp, records, exc)
                return
            self._retry_in = RETRY_FIRST
            # 3. the acknowledged changelog records to the local stores, each with the offset of its
            # changelog's last one. 4. only then the input's offset, with the generation of this
            # assignment. A crash between 3 and 4 redelivers the batch to a store that already holds
            # its writes: the graph finds each contact it holds a duplicate (no state written, the
            # same outputs again), so the writes are idempotent. A crash before 3 leaves the store
            # behind its changelog: the next assignment reads the changelog from the store's offset.
            for table, items in changelog:
                if items:
                    table.persist(items, last[table.topic], writer)
                else:
                    table.trim()
            try:
                await self.consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("identity_commit_failed", group=self.group, error=type(exc).__name__)
                # a newer generation owns the partition: no further writes from here. The stores keep
                # the batch unverified: the next assignment checks it against the changelog's fences.
                self.writer = None
                for table in self.tables:
                    table.clear()
                return
            # 5. committed: the batch's changelog records came before any later owner's fence
            for table, items in changelog:
                if items:
                    table.store.verify(last[table.topic])
            self.batches += 1
            self.lag.update(
                {(tp.topic, tp.partition): metrics.lag(self.consumer.highwater(tp), records[-1].offset + 1)}
            )
            each = (time.perf_counter() - t0) / len(records)
            for _ in records:
                self.seconds.observe(each)

    def _produce_failed(self, tp: Any, records: list, exc: BaseException) -> None:
        """The batch's outputs were not all acknowledged (the broker down or unreachable): nothing
        of it is in the stores nor committed, so the tables' caches, which hold its changes, are
        dropped (the stores hold the state before it), the partition is read again from the batch's
        first record, after a pause (``pause``, taken by ``_run`` outside the batch lock so that a
        rebalance does not wait for it) that doubles up to ``RETRY_MOST`` seconds. Records of it
        that the broker did take are sent again: at-least-once, the same records."""
        for table in self.tables:
            table.clear()
        self.consumer.seek(tp, records[0].offset)
        log.warning(
            "identity_produce_failed",
            group=self.group,
            offset=records[0].offset,
            records=len(records),
            error=type(exc).__name__,
            retry_in=self._retry_in,
            exc_info=True,
        )
        self.pause = self._retry_in
        self._retry_in = min(self._retry_in * 2, RETRY_MOST)

    async def _produce(
        self,
        out: Outputs,
        changelog: list[tuple[StateTable | GraphTable, list[tuple[bytes, bytes | None]]]],
        writer: bytes,
    ) -> dict[str, int]:
        """Hand the outputs and the changelog records to the producer and await every
        acknowledgment; the offset of the last record written to each changelog."""
        if out.unsealed:
            await self.ctx._seal(out)
        producer = self.producer
        builders: dict[tuple[str, int], list[Any]] = {}

        def append(topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list) -> None:
            tp_builders = builders.setdefault((topic, partition), [])
            meta = (
                tp_builders[-1].append(timestamp=None, key=key, value=value, headers=headers) if tp_builders else None
            )
            if meta is None:  # none yet, or full: a new one
                tp_builders.append(producer.create_batch())
                tp_builders[-1].append(timestamp=None, key=key, value=value, headers=headers)

        writer_headers = [(WRITER_HEADER, writer)]
        for table, items in changelog:
            for key, value in items:
                append(table.topic, 0, key, value, writer_headers)
        counts: dict[str, int] = {}
        for topic, key, value, headers, partition in out.records:
            if partition is None:
                partition = await self._partition(topic, key)
            append(topic, partition, key, value, [(k, v.encode()) for k, v in (headers or {}).items()])
            counts[topic] = counts.get(topic, 0) + 1

        async def send(tp: tuple[str, int], tp_builders: list) -> list[asyncio.Future]:
            futures = []
            for b in tp_builders:
                b.close()  # a closed batch is sent at once, without lingering
                futures.append(await producer.send_batch(b, tp[0], partition=tp[1]))
            return futures

        tps = list(builders)
        sent = await asyncio.gather(*(send(tp, builders[tp]) for tp in tps))
        acked = await asyncio.gather(*(f for futures in sent for f in futures))
        changelogs = {table.topic for table, _items in changelog}
        last: dict[str, int] = {}
        metas = iter(acked)
        for tp in tps:  # the last offset written to each changelog (a batch's base offset + its records)
            for b in builders[tp]:
                meta = next(metas)
                if tp[0] in changelogs:
                    last[tp[0]] = meta.offset + b.record_count() - 1
        for topic, n in counts.items():
            self.ctx.produced(topic).inc(n)
        return last

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            await self.producer.client._wait_on_metadata(topic)
            partitions = sorted(self.producer.client.cluster.partitions_for_topic(topic) or ())
            self._partitions[topic] = partitions
        return keyed_partitioner(key, partitions, partitions)


class _Listener(ConsumerRebalanceListener):
    """The rebalance callbacks of the runner's consumer (aiokafka awaits them)."""

    def __init__(self, runner: IdentityRunner):
        self.runner = runner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.runner.revoked()

    async def on_partitions_assigned(self, assigned) -> None:
        await self.runner.assigned(set(assigned))
