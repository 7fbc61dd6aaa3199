"""The identity stage's runner: the graph topic read with aiokafka's batch API, not faust's
per-record consume path.

The graph has one partition and one writer (``streams.identity``), so the stage needs none of
faust's machinery for many partitions: it is a consumer of its own group (``identity_group``:
the worker's app id + ``-identity``; every worker running the stage joins it, one of them is
given the partition), a producer, and two tables (the graph: ``GraphTable``, its records held
parsed, each changed record's JSON made once per batch; the contacts' bytes, kept as they are: ``StateTable``),
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

What others write to a changelog: a key whose latest record is one every replay skips would lose
its value to log compaction, so a recovery writes such keys again after its fence
(``_write_again``), and a batch whose changelog records land later than expected reads what came
between (``_others``): another owner's fence stops this worker, an earlier writer's record is
written over, an erasure's tombstone is applied to the store.

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
from aiokafka.errors import KafkaError
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from schemas.codec import Codec
from streams.identity import IdentityGraph
from streams.identity_stage import GraphTable, IdentityStage, StateTable
from streams.identity_store import FencedReplay, MemoryStore, Position, RocksStore, TableStore, is_fence
from streams.rules import IdentityRules
from streams.batch_runner import BatchRunner, Leading, stage_group
from streams.stage import Outputs, StageContext, log
from streams.topology import StreamTopics
from threadline.settings import Settings

WRITER_HEADER = "writer"
CONTACTS_KEPT = 10_000  # the contacts table's cache: parsed values kept between batches at most
LOOK_EVERY = 5.0  # seconds between two looks at the changelogs' ends while the partition is owned


def identity_group(app_id: str) -> str:
    """The consumer group of the identity stage of the workers of ``app_id``."""
    return stage_group(app_id, IdentityRunner.stage)


def fence_key(writer: str) -> bytes:
    return orjson.dumps(["fence", writer])


def replay(records: Iterable[tuple[bytes, bytes | None, bytes | None]], table: StateTable | GraphTable) -> int:
    """A changelog's records, in offset order from offset 0 (each ``(key, value, writer)``; a None
    value deletes the key), written to the table's store with the fence rules (``FencedReplay``),
    as a recovery writes them; the table's cache dropped. Returns how many the fence rules skipped.
    (For tests and clean runs: the runner's recovery reads the changelog itself, ``_recover``.)"""
    records = list(records)
    fenced = FencedReplay()
    items = list(fenced.apply(records))
    table.clear()
    table.store.write(items, len(records) - 1, fenced.writer, verified=True)
    return fenced.skipped


@dataclass(frozen=True)
class Recovered:
    """One table's recovery: the first changelog offset read, how many records were read, how
    many of them the fence rules skipped, whether the local store was rebuilt from nothing."""

    from_offset: int
    read: int
    skipped: int
    rebuilt: bool
    written_again: int = 0


class IdentityRunner(BatchRunner):
    """The identity stage as a service of the worker's app: started once the app is, stopped
    with it (``streams.app.create_app``)."""

    stage = "identity"
    # the partition stays with its owner when workers join or leave: no needless recovery
    assignor = StickyPartitionAssignor

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
        super().__init__(settings, app_id, [names.graph], ctx, **kwargs)
        self.names = names
        self.store_dir = store_dir  # None: the tables' stores are in memory

        def store(topic: str) -> TableStore:
            return RocksStore(store_dir / f"{topic}.db") if store_dir is not None else MemoryStore()

        self.graph_table = GraphTable(names.graph_changelog, store(names.graph_changelog))
        # a contact's bytes are read again only when a merge or an unmerge moves it: few kept
        self.contacts_table = StateTable(names.contacts_changelog, store(names.contacts_changelog), CONTACTS_KEPT)
        self.tables: tuple[GraphTable | StateTable, ...] = (self.graph_table, self.contacts_table)
        self.stage_rules = IdentityStage(ctx, codec, names, IdentityGraph(self.graph_table, rules), self.contacts_table)
        self.writer: bytes | None = None  # set while this worker owns the partition and its tables are recovered
        self._expect: dict[str, int] = {}  # per changelog: the offset of its next record, if nobody else writes
        self.ends_reader: Any = None

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from threadline.kafka import aiokafka_config

        await super().on_start()
        # asks the changelogs' end offsets (``look_at_changelogs``); belongs to no group
        self.ends_reader = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.app_id}-identity-ends",
            **aiokafka_config(self.settings),
        )
        await self.ends_reader.start()

    async def on_stop(self) -> None:
        self.writer = None
        if self.ends_reader is not None:
            await self.ends_reader.stop()
        await super().on_stop()
        for table in self.tables:
            table.store.close()

    @BatchRunner.timer(LOOK_EVERY)
    async def _look(self) -> None:
        try:
            await self.look_at_changelogs()
        except (KafkaError, asyncio.TimeoutError) as exc:  # looked at again at the next turn
            log.warning("identity_changelog_look_failed", group=self.group, error=type(exc).__name__)

    async def look_at_changelogs(self) -> None:
        """While this worker owns the partition, what others wrote to its changelogs since its last
        record of them (``_others``), even when no contact comes: an erasure's tombstones reach
        the store within ``LOOK_EVERY`` seconds, an earlier writer's record is written over."""
        if self.writer is None or self.ends_reader is None:
            return
        from aiokafka.structs import TopicPartition

        tps = {TopicPartition(table.topic, 0): table for table in self.tables}
        ends = await self.ends_reader.end_offsets(list(tps))
        async with self._lock:
            for tp, table in tps.items():
                end = ends[tp]
                if self.writer is None:
                    return
                if end > self._expect.get(table.topic, end):
                    await self._others(table, [], [end, end - 1], verified=True)

    # -- the partition assigned and revoked -------------------------------------------------

    async def on_assigned(self, partitions: set) -> None:
        coordinator = self.consumer._coordinator
        writer = f"{coordinator.member_id}/{coordinator.generation}".encode()
        t0 = time.perf_counter()
        fences = {table.topic: await self._fence(table, writer) for table in self.tables}
        self._expect = {topic: offset + 1 for topic, offset in fences.items()}
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
            written_again=sum(r.written_again for r in done.values()),
            seconds=round(time.perf_counter() - t0, 3),
        )

    async def on_revoked(self) -> None:
        self.writer = None
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
        again = await self._write_again(table, fenced.dangling, writer) if fenced.dangling else 0
        return Recovered(start, read, fenced.skipped, rebuilt, again)

    async def _write_again(
        self, table: StateTable | GraphTable, keys: set[bytes], writer: bytes, *, verified: bool = True
    ) -> int:
        """Write this worker's value of each of ``keys`` (a tombstone where it holds none) to the
        table's changelog again, after the records of them every replay skips (an earlier writer's,
        after a fence): log compaction keeps a key's latest record only, and without this one it
        would keep the skipped record and drop the value that applies. The store notes the offsets
        (``verified``: at recovery; in a batch, the batch's commit verifies them)."""
        store = table.store
        ours = [(key, store.get(key)) for key in sorted(keys)]
        headers = [(WRITER_HEADER, writer)]
        spans = await self._produce(Outputs(), [(table.topic, 0, key, value, headers) for key, value in ours])
        last = spans[table.topic][1]
        store.write(ours, last, writer, verified=verified)
        self._expect[table.topic] = last + 1
        return len(ours)

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

    # -- a batch (streams.batch_runner: the order of its steps) ---------------------------------------

    def may_write(self, tp: Any) -> bool:
        return self.writer is not None

    def process(self, records: list, out: Outputs) -> list[tuple[GraphTable | StateTable, list]]:
        """The rules over the batch; each table's changed keys, once each, as changelog records."""
        self.stage_rules.process(records, out)
        return [(table, table.changelog_items()) for table in self.tables]

    def leading(self, written: list[tuple[GraphTable | StateTable, list]]) -> list[Leading]:
        """The changelog records, each headed with this worker's ``writer``, before the outputs."""
        assert self.writer is not None
        headers = [(WRITER_HEADER, self.writer)]
        return [(table.topic, 0, key, value, headers) for table, items in written for key, value in items]

    async def acknowledged(
        self, written: list[tuple[GraphTable | StateTable, list]], spans: dict[str, list[int]]
    ) -> bool:
        """3. The acknowledged changelog records to the local stores, each with the offset of its
        changelog's last one. A crash between this and the commit redelivers the batch to a store
        that already holds its writes: the graph finds each contact it holds a duplicate (no state
        written, the same outputs again), so the writes are idempotent. A crash before it leaves the
        store behind its changelog: the next assignment reads the changelog from the store's offset.

        Then what others wrote to a changelog since this worker's last record of it (``_others``):
        False when that is another writer's fence (this worker lost the partition: no commit)."""
        assert self.writer is not None
        for table, items in written:
            if items:
                table.persist(items, spans[table.topic][1], self.writer)
            else:
                table.trim()
        for table, items in written:
            if items and not await self._others(table, items, spans[table.topic]):
                return False
        return True

    async def _others(
        self, table: GraphTable | StateTable, items: list, span: list[int], *, verified: bool = False
    ) -> bool:
        """The records others wrote to ``table``'s changelog between this worker's previous record
        of it and this batch's first (``span``: this batch's first and last offsets; the span's
        last is moved past what is written here). Each is one of:

        * another writer's fence: this worker lost the partition; it writes nothing more (False);
        * a record of an earlier writer after this worker's fence (a worker paused past its session
          timeout, writing the batch it was processing): every replay skips it, but a compacted
          changelog keeps only the latest record of a key, which would be that one; so this
          worker writes its own value of each such key again, after it;
        * a record without a writer (erasure's tombstones): applied to the store, unless this batch
          wrote the key after it; the table's cache is dropped."""
        expected = self._expect.get(table.topic)
        first, last = span
        self._expect[table.topic] = last + 1
        if expected is None or first <= expected:
            return True
        assert self.writer is not None
        store, mine = table.store, self.writer
        written_now = {key for key, _value in items}
        again: set[bytes] = set()
        erased: list[tuple[bytes, bytes | None]] = []
        async for records in self._read(table.topic, expected, first - 1):
            for r in records:
                writer = dict(r.headers or ()).get(WRITER_HEADER)
                if is_fence(r.key) and writer != mine:
                    log.warning("identity_fenced_out", group=self.group, table=table.topic, offset=r.offset)
                    self.commit_failed()
                    return False
                if writer is None:
                    if r.key not in written_now:
                        erased.append((r.key, r.value))
                elif writer != mine and r.key not in written_now:
                    again.add(r.key)
        if erased:
            store.write(erased, max(last, store.position().offset), mine, verified=verified)
            table.clear()
        if again:
            await self._write_again(table, again, mine, verified=verified)
            span[1] = self._expect[table.topic] - 1
        log.info(
            "identity_changelog_others",
            table=table.topic,
            from_offset=expected,
            to_offset=first - 1,
            written_again=len(again),
            erased=len(erased),
        )
        return True

    def committed(self, written: list[tuple[GraphTable | StateTable, list]], spans: dict[str, list[int]]) -> None:
        """5. Committed: the batch's changelog records came before any later owner's fence."""
        for table, items in written:
            if items:
                table.store.verify(spans[table.topic][1])

    def commit_failed(self) -> None:
        """A newer generation owns the partition: no further writes from here. The stores keep the
        batch unverified: the next assignment checks it against the changelog's fences."""
        self.writer = None
        for table in self.tables:
            table.clear()

    def produce_failed(self) -> None:
        """Nothing of the batch is in the stores: the tables' caches, which hold its changes, go
        (the stores hold the state before it)."""
        for table in self.tables:
            table.clear()
