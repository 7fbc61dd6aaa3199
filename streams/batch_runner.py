"""A stage on aiokafka's batch API, outside faust's per-record consume path: what the identity
stage's runner (``streams.identity_runner``) and the route stage's (``streams.route_runner``)
share.

A runner is a consumer of a group of its own (``stage_group``: the worker's app id + ``-`` + the
stage; every worker running the stage joins it), a producer of its own, and a loop over
``getmany``'s batches, each partition's records processed in order. A batch, in this order
(``_batch``; a subclass adds its state at the marked steps):

1. ``process``: the stage's rules make the batch's outputs (and the subclass its table writes);
2. the outputs, after the records ``leading`` puts first (a table's changelog records), go to the
   producer as closed producer batches, one per topic partition, and every acknowledgment
   (acks=all) is awaited;
3. ``acknowledged``: the subclass writes what the broker now holds to its local stores;
4. the input's offset is committed, with the generation of the group it was read in (a worker
   that lost the partition meanwhile gets CommitFailedError: ``commit_failed``);
5. ``committed``: the subclass marks its stores verified.

A crash before 4 redelivers the batch (at-least-once; a stage's outputs are the same for the same
input). The broker not taking the batch at 2 (down, unreachable, a timeout) stops neither the
stage nor the worker: ``produce_failed`` drops what the subclass holds of the batch, and the
partition is read again from the batch's first record after a pause that doubles up to
``RETRY_MOST`` seconds. A rebalance waits for the batch in flight (``_lock``).

Upgrading from a faust agent: a partition this group never committed starts where the worker's
faust group (the app id) had committed it (``start_offset``), not at its beginning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from streams.stage import BATCH_MAX, COMPONENT, Outputs, StageContext, log
from threadline import metrics
from threadline.async_producer import keyed_partitioner
from threadline.settings import Settings

POLL_MS = 200  # how long a getmany waits for records when there are none
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds before a batch the broker did not take is read again
MAX_BATCH_BYTES = 1_000_000  # a producer batch (one topic partition's records of a stage batch) at most

# A record to produce before a batch's outputs: (topic, partition, key, value, headers).
Leading = tuple[str, int, bytes | None, bytes | None, list]


def stage_group(app_id: str, stage: str) -> str:
    """The consumer group of ``stage`` in the workers of ``app_id``."""
    return f"{app_id}-{stage}"


class BatchRunner(Service):
    """A stage's runner as a service of the worker (``streams.app``), or the process itself
    (``streams.worker.run_runner``). Subclasses set ``stage`` and ``topics`` and give ``process``."""

    stage = ""  # the stage's name: its consumer group's suffix, its client id, its metrics' label
    assignor: Any = None  # aiokafka's partition assignment strategy (None: aiokafka's default)

    def __init__(self, settings: Settings, app_id: str, topics: Iterable[str], ctx: StageContext, **kwargs: Any):
        super().__init__(**kwargs)
        self.settings, self.app_id, self.ctx = settings, app_id, ctx
        self.topics = list(topics)
        self.group = stage_group(app_id, self.stage)
        self.consumer: Any = None
        self.producer: Any = None
        self._lock = asyncio.Lock()  # held by a batch from its processing to its commit, and by a rebalance
        self._partitions: dict[str, list[int]] = {}
        self._start_at: dict[Any, int] = {}  # partition -> offset taken over from the faust group
        self.batches = 0
        self._retry_in = RETRY_FIRST
        self.pause = 0.0  # seconds to wait before the next fetch (a batch the broker did not take)
        self.seconds = metrics.PROCESSING_SECONDS.labels(COMPONENT, self.stage)
        self.lag = metrics.LagGauge(COMPONENT)  # threadline_consumer_lag of the partitions this runner owns
        self._lags: dict[tuple[str, int], int | None] = {}

    # -- what a stage gives -----------------------------------------------------------------

    def process(self, records: list, out: Outputs) -> Any:
        """The batch's outputs into ``out``; returns what ``leading``, ``acknowledged`` and
        ``committed`` take (the stage's table writes), or None."""
        raise NotImplementedError

    def may_write(self, tp: Any) -> bool:
        """Whether this worker may process ``tp``'s records, which it was assigned (its state is
        recovered, it has not lost the partition since)."""
        return True

    def leading(self, written: Any) -> list[Leading]:
        """Records produced before the batch's outputs (a table's changelog records)."""
        return []

    async def acknowledged(self, written: Any, spans: dict[str, list[int]]) -> bool:
        """Step 3: every record of the batch acknowledged; ``spans``: the offsets of the first and
        the last record written to each topic of ``leading``'s records. False: this worker must not
        commit the batch (it learnt it lost the partition)."""
        return True

    def committed(self, written: Any, spans: dict[str, list[int]]) -> None:
        """Step 5: the batch's input offset committed."""

    def commit_failed(self) -> None:
        """Another generation of the group owns the partition now."""

    def produce_failed(self) -> None:
        """The batch was not acknowledged: drop whatever holds its changes."""

    async def on_assigned(self, partitions: set) -> None:
        """Partitions given to this worker (after their start offsets are known), under the lock."""

    async def on_revoked(self) -> None:
        """The assignment taken back (a batch in flight has finished), under the lock."""

    # -- life cycle -------------------------------------------------------------------------

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from threadline.kafka import aiokafka_config

        cfg = aiokafka_config(self.settings)
        client_id = f"{self.app_id}-{self.stage}"
        self.producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=False,  # docs/design.md, known pitfalls; duplicates are harmless here
            linger_ms=5,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_BATCH_BYTES + 100_000,
            partitioner=keyed_partitioner,
            client_id=client_id,
            **cfg,
        )
        assignment = {"partition_assignment_strategy": (self.assignor,)} if self.assignor is not None else {}
        self.consumer = AIOKafkaConsumer(
            group_id=self.group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_MAX,
            session_timeout_ms=int(self.settings.streams.session_timeout * 1000),
            heartbeat_interval_ms=min(3000, int(self.settings.streams.session_timeout * 1000 / 3)),
            **assignment,
            **cfg,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    @property
    def ready(self) -> str | None:
        """Why the stage is not ready, or None: its consumer has joined its group."""
        if self.consumer is None:
            return f"the {self.stage} stage is starting"
        generation = getattr(self.consumer._coordinator, "generation", -1)
        if generation is None or generation < 0:
            return f"the {self.stage} stage has not joined group {self.group} yet"
        return None

    # -- partitions assigned and revoked ----------------------------------------------------

    async def assigned(self, partitions: set) -> None:
        async with self._lock:
            self._start_at = {}
            for tp in partitions:
                offset = await self.start_offset(tp)
                if offset is not None:
                    # applied to the first batch (aiokafka resets a partition without a commit to
                    # auto_offset_reset after this callback: a seek here does not hold)
                    self._start_at[tp] = offset
            if partitions:
                await self.on_assigned(partitions)

    async def revoked(self) -> None:
        async with self._lock:  # a batch in flight finishes (commit included) before the partitions go
            self._start_at, self._lags = {}, {}
            self.lag.update({})
            await self.on_revoked()

    async def start_offset(self, tp: Any) -> int | None:
        """Where to start ``tp`` when this group has never committed it: the offset the faust group
        of the same app id committed (the stage was a faust agent there), if any."""
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
        log.info(
            "stage_offset_taken_over",
            stage=self.stage,
            group=self.group,
            from_group=self.app_id,
            topic=tp.topic,
            partition=tp.partition,
            offset=meta.offset,
        )
        return meta.offset

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
            if tp not in self.consumer.assignment() or not self.may_write(tp):
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
            written = self.process(records, out)  # 1.
            try:  # 2. the outputs to the producer, every acknowledgment awaited
                spans = await self._produce(out, self.leading(written))
                if not await self.acknowledged(written, spans):  # 3.
                    return
            except (KafkaError, asyncio.TimeoutError) as exc:
                self._produce_failed(tp, records, exc)
                return
            self._retry_in = RETRY_FIRST
            try:  # 4. only then the input's offset, with the generation of this assignment
                await self.consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning(f"{self.stage}_commit_failed", group=self.group, error=type(exc).__name__)
                self.commit_failed()
                return
            self.committed(written, spans)  # 5.
            self.batches += 1
            self._lag(tp, records[-1].offset + 1)
            each = (time.perf_counter() - t0) / len(records)
            for _ in records:
                self.seconds.observe(each)

    def _lag(self, tp: Any, position: int) -> None:
        self._lags[(tp.topic, tp.partition)] = metrics.lag(self.consumer.highwater(tp), position)
        self.lag.update(self._lags)

    def _produce_failed(self, tp: Any, records: list, exc: BaseException) -> None:
        """The batch's outputs were not all acknowledged (the broker down or unreachable): nothing
        of it is committed, whatever holds its changes is dropped (``produce_failed``), and the
        partition is read again from the batch's first record, after a pause (``pause``, taken by
        ``_run`` outside the batch lock so that a rebalance does not wait for it) that doubles up to
        ``RETRY_MOST`` seconds. Records of it that the broker did take are sent again:
        at-least-once, the same records."""
        self.produce_failed()
        self.consumer.seek(tp, records[0].offset)
        log.warning(
            f"{self.stage}_produce_failed",
            group=self.group,
            topic=tp.topic,
            partition=tp.partition,
            offset=records[0].offset,
            records=len(records),
            error=type(exc).__name__,
            retry_in=self._retry_in,
            exc_info=True,
        )
        self.pause = self._retry_in
        self._retry_in = min(self._retry_in * 2, RETRY_MOST)

    async def _produce(self, out: Outputs, leading: list[Leading]) -> dict[str, list[int]]:
        """Hand ``leading`` and the outputs to the producer as closed producer batches and await
        every acknowledgment; the offsets of the first and the last record written to each topic
        of ``leading`` (one partition each)."""
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

        for topic, partition, key, value, headers in leading:
            append(topic, partition, key, value, headers)
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
        firsts = {topic for topic, *_ in leading}
        spans: dict[str, list[int]] = {}
        metas = iter(acked)
        for tp in tps:  # the offsets written to each leading topic (a batch's base offset + its records)
            for b in builders[tp]:
                meta = next(metas)
                if tp[0] in firsts:
                    span = spans.setdefault(tp[0], [meta.offset, meta.offset])
                    span[1] = meta.offset + b.record_count() - 1
        for topic, n in counts.items():
            self.ctx.produced(topic).inc(n)
        return spans

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            await self.producer.client._wait_on_metadata(topic)
            partitions = sorted(self.producer.client.cluster.partitions_for_topic(topic) or ())
            self._partitions[topic] = partitions
        return keyed_partitioner(key, partitions, partitions)


class _Listener(ConsumerRebalanceListener):
    """The rebalance callbacks of a runner's consumer (aiokafka awaits them)."""

    def __init__(self, runner: BatchRunner):
        self.runner = runner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.runner.revoked()

    async def on_partitions_assigned(self, assigned) -> None:
        await self.runner.assigned(set(assigned))
