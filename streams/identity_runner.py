"""The identity stage's runner: the graph topic read with aiokafka's batch API, not faust's
per-record consume path.

The graph has one partition and one writer (``streams.identity``), so the stage needs none of
faust's machinery for many partitions: it is a consumer of its own group (``identity_group``:
the worker's app id + ``-identity``; every worker running the stage joins it, one of them is
given the partition), a producer, and two tables held in the process with a changelog topic each,
written by the runner itself: the graph (``GraphTable``: its records held parsed, each changed
record's JSON made once per batch for the changelog) and the contacts' bytes (``StateTable``).

A batch (``getmany``, up to ``BATCH_MAX`` records) goes through the stage's rules
(``IdentityStage.process``: the same rules, outputs and DLQ as before); then, in this order:

1. the batch's outputs (contacts.resolved.v1, identities.v1, moved commands, dead letters) and
   each changed table key once (its changelog record, headed ``writer``) are handed to the
   producer, as producer batches, one per topic partition;
2. every one of them is acknowledged by the broker (acks=all) — the runner waits for them;
3. only then is the input's offset committed, with the group generation the batch was read in
   (a worker that has lost the partition gets CommitFailedError and writes nothing more).

A crash anywhere before 3 redelivers the batch; the rules give the same outputs for the same
inputs, and a contact the graph has seen is a duplicate that changes no state.

Recovery and fencing. When the partition is assigned, the runner writes a *fence* record to each
changelog (key ``["fence", writer]``, writer = the group member id and generation), waits for
its acknowledgment, then rebuilds the tables from the changelog's beginning up to that fence
(``replay``). From a fence on, records headed by another writer are skipped on every replay: a
worker that lost the partition (a long pause past the session timeout) and writes before it
learns so cannot change the state the next owner, or any later one, recovers. Records without a
``writer`` header (the changelogs faust's tables wrote before, erasure's tombstones) always
apply. The same worker stops writing as soon as the revocation reaches it: the rebalance waits
for the batch in flight (``_lock``). Given the partition back with nobody's changelog record after
its own last one, a worker keeps its tables; otherwise it reads them again.

Upgrading from the faust agent: the stage's group has no committed offset yet, so the runner
starts where the worker's faust group (the app id) had committed the graph topic, not at its
beginning (``start_offset``); the changelogs are the ones faust's tables wrote, read as they are.

The tables are in memory: a restart reads the changelogs (compacted topics) from their
beginning. A local store with a recorded changelog offset (faust's RocksDB tables' way) is not
built (docs/streams.md, Throughput).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from mode import Service

from schemas.codec import Codec
from streams.identity import IdentityGraph
from streams.identity_stage import GraphTable, IdentityStage, StateTable
from streams.rules import IdentityRules
from streams.stage import BATCH_MAX, COMPONENT, Outputs, StageContext, log
from streams.topology import StreamTopics
from threadline import metrics
from threadline.async_producer import keyed_partitioner
from threadline.settings import Settings

WRITER_HEADER = "writer"
FENCE_PREFIX = b'["fence",'
POLL_MS = 200  # how long a getmany waits for records when there are none
MAX_BATCH_BYTES = 1_000_000  # a producer batch (one topic partition's records of a stage batch) at most


def identity_group(app_id: str) -> str:
    """The consumer group of the identity stage of the workers of ``app_id``."""
    return f"{app_id}-identity"


def fence_key(writer: str) -> bytes:
    return orjson.dumps(["fence", writer])


def replay(records: Iterable[tuple[bytes, bytes | None, bytes | None]], table: StateTable | GraphTable) -> int:
    """Apply a changelog's records, in offset order, to ``table`` (``restore``: the graph's table
    parses each value into its record): each ``(key, value, writer)``, a None value deleting the
    key. A fence record names the one writer from there on; a later record headed by another
    writer is skipped, and so is a record the table has no place for. Returns how many were."""
    current: bytes | None = None
    skipped = 0
    restore = table.restore
    for key, value, writer in records:
        if key.startswith(FENCE_PREFIX):
            current = orjson.loads(key)[1].encode()
            continue
        if writer is not None and current is not None and writer != current:
            skipped += 1
            continue
        if not restore(orjson.loads(key), None if value is None else orjson.loads(value)):
            skipped += 1
    return skipped


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
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.settings, self.app_id, self.names, self.ctx = settings, app_id, names, ctx
        self.graph_table = GraphTable(names.graph_changelog)
        self.contacts_table = StateTable(names.contacts_changelog)
        self.stage = IdentityStage(ctx, codec, names, IdentityGraph(self.graph_table, rules), self.contacts_table)
        self.group = identity_group(app_id)
        self.consumer: Any = None
        self.producer: Any = None
        self.writer: bytes | None = None  # set while this worker owns the partition and its tables are recovered
        # The offset of the last changelog record this worker wrote, per changelog, while its tables
        # are what those changelogs say (``kept``): given the partition back with nobody's record
        # after its own, it keeps them instead of reading the changelogs again.
        self.last_written: dict[str, int] = {}
        self.kept = False
        self._lock = asyncio.Lock()  # held by a batch from its processing to its commit, and by a rebalance
        self._partitions: dict[str, list[int]] = {}
        self._start_at: dict[Any, int] = {}  # partition -> offset taken over from the faust group
        self.batches = 0
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
            skipped = 0
            fences = {
                table.topic: await self._fence(table, writer) for table in (self.graph_table, self.contacts_table)
            }
            kept = self.kept and all(self.last_written.get(topic, -1) == at - 1 for topic, at in fences.items())
            if not kept:  # someone else wrote since (or this worker never had them): read them again
                for table in (self.graph_table, self.contacts_table):
                    table.clear()
                    skipped += await self._recover(table, fences[table.topic])
            self.last_written = dict(fences)
            self.kept, self.writer = False, writer
            log.info(
                "identity_state_recovered",
                group=self.group,
                generation=coordinator.generation,
                kept=kept,
                graph_keys=len(self.graph_table),
                contacts=len(self.contacts_table),
                skipped_records=skipped,
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
            # tables kept only if they are exactly what this worker's changelog records say
            self.kept = self.writer is not None
            self.writer = None
            self._start_at = {}
            self.lag.update({})
            if not self.kept:
                self.graph_table.clear()
                self.contacts_table.clear()

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

    async def _recover(self, table: StateTable | GraphTable, fence_offset: int) -> int:
        """The table read from its changelog's beginning to this writer's fence (``replay``)."""
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
            tp = TopicPartition(table.topic, 0)
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            skipped = 0
            done = False
            while not done:
                got = await reader.getmany(tp, timeout_ms=1000, max_records=10_000)
                records = []
                for r in got.get(tp, ()):
                    if r.offset > fence_offset:
                        done = True
                        break
                    records.append((r.key, r.value, dict(r.headers or ()).get(WRITER_HEADER)))
                    if r.offset == fence_offset:
                        done = True
                        break
                skipped += replay(records, table)
                if not done and await reader.position(tp) > fence_offset:
                    done = True
            return skipped
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
            changelog = [(table.topic, table.take_dirty()) for table in (self.graph_table, self.contacts_table)]
            # 1. outputs and changelog records to the producer; 2. every acknowledgment awaited
            await self._produce(out, changelog, writer)
            # 3. only then the input's offset, with the generation of this assignment
            try:
                await self.consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("identity_commit_failed", group=self.group, error=type(exc).__name__)
                self.writer = None  # a newer generation owns the partition: no further writes from here
                self.graph_table.clear()
                self.contacts_table.clear()
                return
            self.batches += 1
            self.lag.update(
                {(tp.topic, tp.partition): metrics.lag(self.consumer.highwater(tp), records[-1].offset + 1)}
            )
            each = (time.perf_counter() - t0) / len(records)
            for _ in records:
                self.seconds.observe(each)

    async def _produce(self, out: Outputs, changelog: list[tuple[str, dict]], writer: bytes) -> None:
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
        for topic, items in changelog:
            for key, value in items.items():
                append(topic, 0, orjson.dumps(key), orjson.dumps(value), writer_headers)
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
        changelogs = {topic for topic, _items in changelog}
        metas = iter(acked)
        for tp in tps:  # the last offset written to each changelog (a batch's base offset + its records)
            for b in builders[tp]:
                meta = next(metas)
                if tp[0] in changelogs:
                    self.last_written[tp[0]] = meta.offset + b.record_count() - 1
        for topic, n in counts.items():
            self.ctx.produced(topic).inc(n)

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
