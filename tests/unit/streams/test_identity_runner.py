"""streams/identity_runner.py without a broker: the changelog's replay and its fences, and a
batch's order (outputs and changelog produced, every acknowledgment awaited, then the offset
committed), with a fake producer and consumer."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import orjson
import pytest

import schemas
from connectors.contact import IdentityIn, to_record
from schemas.codec import SingleObjectCodec
from streams.identity_runner import IdentityRunner, fence_key, identity_group, replay
from streams.identity_stage import GraphTable, StateTable
from streams.identity_store import Position, RocksStore
from streams.rules import IdentityRules
from streams.stage import StageContext
from streams.topology import StreamTopics
from threadline.catalog import IDENTITY_CONTACTS_CHANGELOG
from threadline.settings import CodecKind, Settings

from ..conftest import RECORDED_AT
from .fake_kafka import BrokerDownProducer, FakeAdmin, FakeConsumer, FakeProducer, Record

A, B = b"member-a/1", b"member-b/2"


def table_of(topic: str) -> GraphTable | StateTable:
    """An empty table of the kind the runner keeps ``topic``'s records in."""
    return StateTable(topic) if topic.endswith(IDENTITY_CONTACTS_CHANGELOG.name) else GraphTable(topic)


def k(key) -> bytes:
    return orjson.dumps(key)


def v(value) -> bytes:
    return orjson.dumps(value)


# --- replay: the changelog read back, fenced ---------------------------------------------------


def test_replay_applies_records_in_order_and_a_tombstone_deletes():
    table = GraphTable("c")  # JSON values: the graph's table
    skipped = replay([(k("n:a"), v({"x": 1}), None), (k("n:b"), v({"y": 2}), None), (k("n:a"), None, None)], table)
    assert table.snapshot() == {"n:b": {"y": 2}} and skipped == 0


def test_after_a_fence_only_its_writer_and_unheaded_records_apply():
    """A worker that lost the partition (writer A) and writes after the next owner's fence (B)
    changes nothing that a replay gives; an erasure's tombstone (no writer header) still applies."""
    table = GraphTable("c")  # JSON values: the graph's table
    skipped = replay(
        [
            (fence_key(A.decode()), v({}), A),
            (k("n:a"), v({"by": "a"}), A),
            (k("n:gone"), v({"by": "a"}), A),
            (fence_key(B.decode()), v({}), B),
            (k("n:a"), v({"by": "zombie a"}), A),  # A has not learnt yet that it lost the partition
            (k("n:b"), v({"by": "b"}), B),
            (k("n:gone"), None, None),  # erasure
        ],
        table,
    )
    assert table.snapshot() == {"n:a": {"by": "a"}, "n:b": {"by": "b"}}
    assert skipped == 1


def test_records_before_any_fence_apply_whoever_wrote_them():
    """The changelogs faust's tables wrote (no fence, no writer header) and a writer's records
    before its first fence are the state as it was."""
    table = GraphTable("c")  # JSON values: the graph's table
    assert replay([(k("e:1"), v("x"), None), (k("e:2"), v("y"), A)], table) == 0
    assert table.snapshot() == {"e:1": "x", "e:2": "y"}


def test_fence_keys_are_not_graph_keys_and_each_writer_has_its_own():
    assert fence_key("m/1") != fence_key("m/2")  # never compacted away by the next fence
    assert not orjson.loads(fence_key("m/1"))[0].startswith(("n:", "e:"))
    assert identity_group("threadline-streams") == "threadline-streams-identity"


# --- a batch: order, redelivery, revocation ----------------------------------------------------


@pytest.fixture
def world(tmp_path):
    from aiokafka.structs import TopicPartition

    names = StreamTopics.prefixed("u")
    codec = SingleObjectCodec()
    ctx = StageContext(None, "unit", names.dlq)  # type: ignore[arg-type]
    settings = Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT)
    runner = IdentityRunner(settings, "unit", names, ctx, codec, IdentityRules())
    runner._partitions = {t: list(range(6)) for t in (names.resolved, names.identities, names.commands, names.dlq)}
    log: list = []
    tp = TopicPartition(names.graph, 0)
    runner.producer, runner.consumer, runner.writer = FakeProducer(log), FakeConsumer(log, tp), A
    return runner, names, codec, tp, log


def contacts(full_contact, codec, names, n: int = 4) -> list[Record]:
    out = []
    for i in range(n):
        record = to_record(full_contact.model_copy(update={"provider_id": f"p-{i}"}), RECORDED_AT)
        out.append(Record(names.graph, 0, 10 + i, b"k", codec.encode(names.contacts, schemas.CONTACT, record)))
    return out


def run(coro):
    return asyncio.run(coro)


def test_a_batch_is_produced_then_acknowledged_then_committed(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)
    run(runner._batch(tp, records))
    kinds = [entry[0] for entry in log]
    assert kinds[-1] == "commit" and log[-1][1] == {tp: 14}
    assert kinds.count("commit") == 1
    assert kinds.index("commit") > max(i for i, kind in enumerate(kinds) if kind == "ack")
    assert kinds.count("ack") == kinds.count("send")
    topics = {t for t, *_ in runner.producer.sent}
    assert {names.resolved, names.graph_changelog, names.contacts_changelog} <= topics
    # every changelog record carries this writer; the tables hold what the changelogs say
    changelog = [(t, key, value, h) for t, _p, key, value, h in runner.producer.sent if t.endswith("changelog.v1")]
    assert all(h == [("writer", A)] for *_, h in changelog)
    replayed = GraphTable(names.graph_changelog)
    replay([(key, value, A) for t, key, value, _h in changelog if t == names.graph_changelog], replayed)
    graph = replayed.records()
    assert graph == runner.graph_table.records() and graph
    assert len(runner.contacts_table) == 4
    from threadline.metrics import CONSUMER_LAG

    assert CONSUMER_LAG.labels("worker", names.graph, "0")._value.get() == 120 - 14


def test_a_redelivered_batch_changes_no_state_and_gives_the_same_resolved_contacts(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)
    run(runner._batch(tp, records))
    first = list(runner.producer.sent)
    graph, stored = runner.graph_table.snapshot(), runner.contacts_table.snapshot()
    runner.producer.sent.clear()
    run(runner._batch(tp, records))  # the same batch again: a crash before its commit
    again = runner.producer.sent
    assert not [r for r in again if r[0].endswith("changelog.v1")]  # no state written
    assert runner.graph_table.snapshot() == graph and runner.contacts_table.snapshot() == stored

    def resolved(rs):
        return sorted((key, value) for t, _p, key, value, _h in rs if t == names.resolved)

    assert resolved(again) == resolved(first)


def test_a_batch_the_broker_did_not_take_is_read_again_with_nothing_of_it_kept(world, full_contact):
    """The broker down during a batch: the runner keeps running (no exception out of the batch, so
    the stage is not stopped), commits nothing, drops what its tables hold of the batch and reads
    it again from its first record after a pause; with the broker back, the same batch is processed
    as new (not as duplicates of contacts the failed attempt had put in the tables)."""
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)
    working = runner.producer
    runner.producer = BrokerDownProducer(log)
    run(runner._batch(tp, records))
    assert ("seek", records[0].offset) in log
    assert not [entry for entry in log if entry[0] == "commit"]
    assert runner.pause > 0 and runner.writer == A
    assert runner.graph_table.records() == {} and len(runner.contacts_table) == 0
    assert runner.graph_table.snapshot() == {} and runner.contacts_table.snapshot() == {}

    runner.producer = working
    run(runner._batch(tp, records))
    assert log[-1] == ("commit", {tp: 14})
    resolved = [r for r in working.sent if r[0] == names.resolved]
    changelog = [r for r in working.sent if r[0] == names.graph_changelog]
    assert len(resolved) == 4 and changelog
    replayed = GraphTable(names.graph_changelog)
    replay([(key, value, A) for _t, _p, key, value, _h in changelog], replayed)
    assert replayed.records() == runner.graph_table.records()
    assert len(runner.contacts_table.snapshot()) == 4


def test_a_revoked_partition_gets_no_write_and_no_commit(world, full_contact):
    runner, names, codec, tp, log = world
    run(runner.revoked())
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    assert log == [] and runner.producer.sent == []
    assert len(runner.graph_table) == 0 and len(runner.contacts_table) == 0


def test_a_partition_gone_from_the_assignment_gets_no_write(world, full_contact):
    runner, names, codec, tp, log = world
    runner.consumer.owned = set()  # the rebalance took it before its callback ran
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    assert log == [] and runner.producer.sent == []


def test_a_failed_commit_stops_every_later_write(world, full_contact):
    """The group moved on (CommitFailedError: another generation owns the partition): this worker
    writes nothing more until it is assigned the partition again."""
    runner, names, codec, tp, log = world
    runner.consumer.fail = True
    batch = contacts(full_contact, codec, names)
    run(runner._batch(tp, batch[:2]))
    assert runner.writer is None
    sent = len(runner.producer.sent)
    run(runner._batch(tp, batch[2:]))
    assert len(runner.producer.sent) == sent


def test_an_undecodable_graph_record_goes_to_the_dlq_and_the_batch_is_committed(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names, 2)
    records.insert(1, Record(names.graph, 0, 99, b"k", b"\x00garbage"))
    records[-1].offset = 100
    run(runner._batch(tp, records))
    dlq = [r for r in runner.producer.sent if r[0] == names.dlq]
    assert len(dlq) == 1 and dlq[0][3] == b"\x00garbage"
    assert log[-1] == ("commit", {tp: 101})


@dataclass
class Logged:
    """A changelog record as the recovery's reader gives it."""

    offset: int
    key: bytes
    value: bytes | None
    headers: list


class Assignment:
    """The runner's rebalance callbacks on the fake producer's changelogs: a fence is appended to
    its changelog; the recovery reads the records it asks for from there (``reads``: how many).
    ``someone_fenced`` and ``someone_wrote`` add another writer's fence and records."""

    def __init__(self, runner, monkeypatch, generation: int = 7):
        self.runner, self.reads = runner, 0
        runner.consumer._coordinator = type("Coordinator", (), {"member_id": "m", "generation": generation})()
        logs = runner.producer.logs

        async def fence(table, writer):
            return self.append(table.topic, fence_key(writer.decode()), v({}), writer)

        async def read(topic, start, end):
            records = [Logged(o, *r) for o, r in enumerate(logs.get(topic, [])) if start <= o <= end]
            self.reads += len(records)
            if records:
                yield records

        monkeypatch.setattr(runner, "_fence", fence)
        monkeypatch.setattr(runner, "_read", read)

    def append(self, topic, key, value, writer) -> int:
        log = self.runner.producer.logs.setdefault(topic, [])
        log.append((key, value, [("writer", writer)]))
        self.runner.producer.ends[(topic, 0)] = len(log)
        return len(log) - 1

    def someone_fenced(self, topic, writer=B):
        self.append(topic, fence_key(writer.decode()), v({}), writer)

    def someone_wrote(self, topic, key, value, writer=B):
        self.append(topic, k(key), v(value), writer)

    def replayed(self, topic) -> dict:
        """The changelog replayed with its fences: stored key -> JSON value."""
        table = table_of(topic)
        replay([(key, value, dict(h).get("writer")) for key, value, h in self.runner.producer.logs[topic]], table)
        return table.snapshot()


def test_given_the_partition_back_with_nobody_writing_since_only_its_fence_is_new(world, full_contact, monkeypatch):
    runner, names, codec, tp, log = world
    runner.writer = None
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))  # the first time: a fresh store reads from the changelogs' beginnings
    assert assignment.reads == 0  # nothing before its own fences
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    graph = runner.graph_table.snapshot()
    run(runner.revoked())
    assert runner.writer is None
    run(runner.assigned({tp}))  # back, and nobody wrote after this worker's last record
    assert assignment.reads == 0 and runner.graph_table.snapshot() == graph and runner.writer is not None
    run(runner.revoked())
    assignment.someone_fenced(names.graph_changelog)
    assignment.someone_wrote(names.graph_changelog, "n:x", {"by": "b"})
    run(runner.assigned({tp}))  # back, but another worker wrote meanwhile: only what came after is read
    assert assignment.reads == 3  # its fence, its record, and this worker's new fence
    assert runner.graph_table.snapshot() == assignment.replayed(names.graph_changelog)
    assert runner.graph_table.snapshot()["n:x"] == {"by": "b"}


def test_a_batch_records_its_last_changelog_offset_and_writer_and_is_verified_once_committed(
    world, full_contact, monkeypatch
):
    runner, names, codec, tp, log = world
    runner.writer = None
    Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    writer = runner.writer
    seen: list = []
    commit = runner.consumer.commit

    async def spying_commit(offsets):  # what the store says when the input is committed
        seen.append(runner.graph_table.store.position())
        await commit(offsets)

    runner.consumer.commit = spying_commit
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    end = len(runner.producer.logs[names.graph_changelog]) - 1
    [at_commit] = seen
    assert at_commit.offset == end and at_commit.writer == writer and at_commit.verified == 0  # its fence
    assert runner.graph_table.store.position().verified == end
    assert runner.contacts_table.store.position().offset == len(runner.producer.logs[names.contacts_changelog]) - 1


def restarted(runner, names, codec, tmp_path):
    """A new runner on the same data dir (the worker restarted), sharing the fake broker."""
    again = IdentityRunner(
        runner.settings, "unit", names, runner.ctx, codec, IdentityRules(), store_dir=tmp_path / "identity"
    )
    again._partitions = runner._partitions
    again.producer, again.consumer = runner.producer, runner.consumer
    return again


@pytest.fixture
def on_disk(world, tmp_path):
    runner, names, codec, tp, log = world
    runner = restarted(runner, names, codec, tmp_path)
    return runner, names, codec, tp, log


def test_a_restarted_worker_reads_only_the_changelog_after_its_stores_offset(
    on_disk, full_contact, monkeypatch, tmp_path
):
    runner, names, codec, tp, log = on_disk
    Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    graph, stored = runner.graph_table.snapshot(), runner.contacts_table.snapshot()
    for table in runner.tables:
        table.store.close()  # the process ends (RocksDB's write-ahead log survives a kill too)
    again = restarted(runner, names, codec, tmp_path)
    assignment = Assignment(again, monkeypatch, generation=8)
    run(again.assigned({tp}))
    assert assignment.reads == 0  # only each changelog's new fence came after: nothing read again
    assert again.graph_table.snapshot() == graph == assignment.replayed(names.graph_changelog)
    assert again.contacts_table.snapshot() == stored and again.contacts_table.get(next(iter(stored)))
    run(again._batch(tp, contacts(full_contact, codec, names)))  # redelivered: duplicates, nothing written
    assert again.graph_table.snapshot() == graph


def test_a_fresh_store_reads_the_changelogs_from_their_beginnings(on_disk, full_contact, monkeypatch, tmp_path):
    runner, names, codec, tp, log = on_disk
    Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    total = sum(len(runner.producer.logs[t]) for t in (names.graph_changelog, names.contacts_changelog))
    for table in runner.tables:
        table.store.close()
    shutil.rmtree(tmp_path / "identity")  # a new disk
    again = restarted(runner, names, codec, tmp_path)
    assignment = Assignment(again, monkeypatch, generation=8)
    run(again.assigned({tp}))
    assert assignment.reads == total + 2
    assert again.graph_table.snapshot() == assignment.replayed(names.graph_changelog) != {}


def test_a_batch_stored_but_not_committed_after_another_writers_fence_is_not_kept(
    on_disk, full_contact, monkeypatch, tmp_path
):
    """This worker lost the partition (another writer fenced) and wrote a batch to its changelogs
    and its store before its commit failed (or it died before committing): the store is rebuilt
    to what every replay gives, without that batch."""
    runner, names, codec, tp, log = on_disk
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    for topic in (names.graph_changelog, names.contacts_changelog):
        assignment.someone_fenced(topic)
    runner.consumer.fail = True
    run(runner._batch(tp, contacts(full_contact, codec, names)))  # the zombie's batch
    position = runner.graph_table.store.position()
    assert position.verified < position.offset
    runner.consumer.fail = False
    run(runner.assigned({tp}))
    for table in runner.tables:
        assert table.snapshot() == assignment.replayed(table.topic) == {}


def test_a_batch_stored_but_not_committed_with_nobody_fenced_since_is_kept(
    on_disk, full_contact, monkeypatch, tmp_path
):
    runner, names, codec, tp, log = on_disk
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    runner.consumer.fail = True  # e.g. a rebalance that gave the partition back to this worker
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    graph = runner.graph_table.snapshot()
    runner.consumer.fail = False
    before = assignment.reads
    run(runner.assigned({tp}))
    batch = len(runner.producer.logs[names.graph_changelog]) - 2  # between its two fences
    # its batch checked for another writer's fence (none), nothing else read
    assert assignment.reads - before == batch + (len(runner.producer.logs[names.contacts_changelog]) - 2)
    assert runner.graph_table.snapshot() == graph == assignment.replayed(names.graph_changelog)


def test_a_stale_writers_records_after_the_stores_offset_are_skipped_with_the_fence_it_recorded(
    world, full_contact, monkeypatch
):
    runner, names, codec, tp, log = world
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    run(runner.revoked())
    assignment.someone_wrote(names.graph_changelog, "n:zombie", {"by": "b"})  # B lost the partition long ago
    run(runner.assigned({tp}))
    assert "n:zombie" not in runner.graph_table.snapshot()
    assert runner.graph_table.snapshot() == assignment.replayed(names.graph_changelog)


def test_the_tables_cache_is_bounded_and_misses_read_the_store():
    table = StateTable("t", limit=2)
    for i in range(5):
        table[f"e:{i}"] = b"\x00v%d" % i
    table.persist(table.changelog_items(), 4, A)
    assert len(table.values) == 2 and len(table) == 5
    assert table.get("e:0") == b"\x00v0" and table["e:1"] == b"\x00v1" and table.get("e:9") is None
    assert table.store.position() == Position(4, A, -1)


def test_the_graphs_records_held_are_bounded_and_misses_read_the_store():
    from streams.identity import NodeRecord

    table = GraphTable("g", limit=2)
    for i in range(3):
        table.put_node(f"email:{i}", NodeRecord((f"e{i}",), f"c-{i}", ()))
    items = [(k(key), v(value)) for key, value in table.take_dirty().items()]
    table.persist(items, 2, A)
    assert len(table.nodes) + len(table.contacts) <= 2 and len(table) == 3
    assert table.node("email:0") == NodeRecord(("e0",), "c-0", ()) and table.node("email:9") is None


def test_a_rocksdb_store_keeps_its_records_and_position_across_opens(tmp_path):
    store = RocksStore(tmp_path / "t.db")
    assert store.position() == Position()
    store.write([(k("a"), v(1)), (k("b"), v(2))], 10, A, verified=False)
    store.write([(k("a"), None)], 11, A, verified=False)
    store.verify(11)
    store.close()
    again = RocksStore(tmp_path / "t.db")
    assert again.position() == Position(11, A, 11)
    assert dict(again.items()) == {k("b"): v(2)} and again.get(k("a")) is None
    again.reset()
    assert again.position() == Position() and dict(again.items()) == {}


def test_a_stage_group_without_a_commit_starts_where_the_faust_group_had_committed(world, monkeypatch):
    """Upgrading from the faust agent: the graph topic is not read again from its beginning."""
    import aiokafka.admin
    from aiokafka.structs import OffsetAndMetadata

    runner, names, codec, tp, log = world
    runner.writer = None
    Assignment(runner, monkeypatch)
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", FakeAdmin)
    monkeypatch.setattr(FakeAdmin, "offsets", {"unit": {tp: OffsetAndMetadata(4321, "")}})
    runner.consumer.committed_offset = None
    run(runner.assigned({tp}))
    assert runner._start_at == {tp: 4321}
    run(runner._batch(tp, [Record(names.graph, 0, 17, b"k", b"\x00garbage")]))  # read from the beginning
    assert log == [("seek", 4321)] and runner.producer.sent == []  # skipped, not processed
    log.clear()
    runner.consumer.committed_offset = 4400  # the stage's own group has committed: that is where it goes on
    run(runner.revoked())
    run(runner.assigned({tp}))
    assert runner._start_at == {}
    runner.consumer.committed_offset = None
    monkeypatch.setattr(FakeAdmin, "offsets", {})  # a new deployment: from the beginning (auto_offset_reset)
    run(runner.revoked())
    run(runner.assigned({tp}))
    assert runner._start_at == {}


def test_a_first_batch_across_the_taken_over_offset_is_processed_from_that_offset(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)  # offsets 10-13
    runner._start_at = {tp: 12}
    run(runner._batch(tp, records))
    assert len(runner.contacts_table) == 2 and log[-1] == ("commit", {tp: 14})


# --- the graph's table: records parsed once, at recovery ---------------------------------------


def test_the_graph_is_recovered_as_parsed_records_old_form_tombstones_and_fences_included():
    """Recovery parses each changelog value into its record (the one-letter form faust's table
    wrote too); a tombstone deletes it; a key that is no graph record's is no record."""
    from streams.identity import ContactRecord, NodeRecord

    table = GraphTable("g.changelog")
    node = {"c": ["e1"], "cust": "c-1", "x": []}
    contact = {"t": 5, "a": "email:a", "n": [["email:a", "email", "same_contact"]], "cust": "c-1", "out": []}
    skipped = replay(
        [
            (k("n:email:a"), v(node), None),
            (k("e:e1"), v(contact), None),
            (k("n:gone"), v({"contacts": ["e9"], "customer_id": "c-9", "unlinked": []}), None),
            (fence_key(A.decode()), v({}), A),
            (k("n:gone"), None, None),  # erasure
            (k("x:what"), v({"y": 1}), A),
            (k("n:b"), v({"contacts": ["e1"], "customer_id": "c-1", "unlinked": ["email:a"]}), B),  # fenced out
        ],
        table,
    )
    assert skipped == 1  # the fenced-out record
    assert table.records() == {
        "n:email:a": NodeRecord(("e1",), "c-1", ()),
        "e:e1": ContactRecord(5, "email:a", (("email:a", "email", "same_contact"),), "c-1", ()),
    }
    assert table.take_dirty() == {}  # recovered, not changed


def test_a_batch_parses_no_graph_record_it_holds(world, full_contact, monkeypatch):
    """The graph's records are parsed when the table is recovered and never by a batch: the second
    batch reads the records the first one wrote (its contacts share their identities) as records."""
    from .test_identity_records import count_parses

    runner, names, codec, tp, log = world
    batch = contacts(full_contact, codec, names, 6)
    run(runner._batch(tp, batch[:3]))
    parsed = count_parses(monkeypatch)
    run(runner._batch(tp, batch[3:]))
    assert parsed == []
    customers = {r.customer_id for key, r in runner.graph_table.records().items() if key.startswith("e:")}
    assert len(customers) == 1 and len(runner.contacts_table) == 6


# --- what others write to a changelog while this worker owns it ----------------------------------


def compacted_replay(runner, topic) -> dict:
    """The changelog as compaction leaves it (each key's latest record only, in offset order),
    replayed with its fences: stored key -> JSON value, what a worker with no store recovers."""
    latest: dict = {}
    for offset, (key, value, headers) in enumerate(runner.producer.logs[topic]):
        latest[key] = (offset, key, value, dict(headers).get("writer"))
    records = [r[1:] for r in sorted(latest.values(), key=lambda r: r[0])]
    table = table_of(topic)
    replay(records, table)
    return table.snapshot()


def later_contacts(full_contact, codec, names, first: int, n: int = 2) -> list[Record]:
    """Contacts of other people than ``contacts``' (no identity nor fact in common)."""
    out = []
    for i in range(n):
        contact = full_contact.model_copy(
            update={
                "provider_id": f"later-{first}-{i}",
                "identities": [IdentityIn(kind="email", value=f"someone.{first}.{i}@example.com", primary=True)],
                "facts": [],
            }
        )
        value = codec.encode(names.contacts, schemas.CONTACT, to_record(contact, RECORDED_AT))
        out.append(Record(names.graph, 0, first + i, b"k", value))
    return out


def test_a_paused_workers_write_after_the_fence_is_written_over_so_compaction_keeps_the_owners_value(
    world, full_contact, monkeypatch
):
    """A worker paused past its session timeout writes a key after the next owner's fence. Every
    replay skips that record, but compaction keeps only the latest record of a key: the owner
    writes its own value of the key again after it, so a worker recovering the compacted changelog
    with no store gets the owner's value, not nothing."""
    runner, names, codec, tp, log = world
    runner.writer = None
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    owned = runner.graph_table.snapshot()
    key = next(k for k in owned if k.startswith("n:"))
    Z = b"member-z/6"  # the generation before this worker's
    assignment.someone_wrote(names.graph_changelog, key, {"c": ["zombie"], "cust": "z", "x": []}, writer=Z)
    run(runner._batch(tp, later_contacts(full_contact, codec, names, 20)))
    assert log[-1] == ("commit", {tp: 22})
    store = runner.graph_table.snapshot()
    assert store[key] == owned[key]
    assert compacted_replay(runner, names.graph_changelog) == store
    assert runner.graph_table.store.position().verified == len(runner.producer.logs[names.graph_changelog]) - 1


def test_an_erasure_tombstone_reaches_the_owners_store_at_its_next_write(world, full_contact, monkeypatch):
    """Erasure writes tombstones (no writer) to the changelogs of the graph the owner holds: the
    owner applies them to its store and drops its cache when it next writes to that changelog."""
    runner, names, codec, tp, log = world
    runner.writer = None
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    erased = [k for k in runner.contacts_table.snapshot()][:2]
    topic = names.contacts_changelog
    for key in erased:
        runner.producer.logs[topic].append((k(key), None, []))
        runner.producer.ends[(topic, 0)] = len(runner.producer.logs[topic])
    assert all(runner.contacts_table.get(key) for key in erased)  # held before
    run(runner._batch(tp, later_contacts(full_contact, codec, names, 20)))
    store = runner.contacts_table.snapshot()
    assert not set(erased) & set(store) and len(store) == 4
    assert all(runner.contacts_table.get(key) is None for key in erased)
    assert compacted_replay(runner, topic) == store
    assert assignment.replayed(topic) == store


def test_another_owners_fence_found_after_a_batch_stops_the_commit_and_every_write(world, full_contact, monkeypatch):
    runner, names, codec, tp, log = world
    runner.writer = None
    assignment = Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    assignment.someone_fenced(names.graph_changelog, writer=B)  # the group moved on without this worker knowing
    commits = [e for e in log if e[0] == "commit"]
    run(runner._batch(tp, later_contacts(full_contact, codec, names, 20)))
    assert [e for e in log if e[0] == "commit"] == commits and runner.writer is None
    sent = len(runner.producer.sent)
    run(runner._batch(tp, later_contacts(full_contact, codec, names, 30)))
    assert len(runner.producer.sent) == sent


def test_a_recovery_writes_again_the_keys_whose_latest_record_every_replay_skips(world, monkeypatch):
    """Before this worker's fence, a paused worker (X) wrote a key after the next owner's fence (Y):
    every replay skips that record, and it is the key's latest, so compaction would drop the value
    that applies. The recovering worker writes that value again after its own fence."""
    runner, names, codec, tp, log = world
    runner.writer = None
    assignment = Assignment(runner, monkeypatch)
    X, Y = b"member-x/1", b"member-y/2"
    topic = names.graph_changelog
    node = {"c": ["e1"], "cust": "c-1", "x": []}
    assignment.someone_fenced(topic, writer=X)
    assignment.someone_wrote(topic, "n:email:a", node, writer=X)
    assignment.someone_wrote(topic, "n:email:b", node, writer=X)
    assignment.someone_fenced(topic, writer=Y)
    assignment.someone_wrote(topic, "n:email:b", {**node, "cust": "c-y"}, writer=Y)
    assignment.someone_wrote(topic, "n:email:a", {**node, "cust": "zombie"}, writer=X)  # after Y's fence
    assignment.someone_wrote(topic, "n:email:b", {**node, "cust": "zombie"}, writer=X)
    assignment.someone_wrote(topic, "n:email:b", {**node, "cust": "c-y2"}, writer=Y)  # applies again: not dangling
    run(runner.assigned({tp}))
    store = runner.graph_table.snapshot()
    assert store == {"n:email:a": node, "n:email:b": {**node, "cust": "c-y2"}}
    assert compacted_replay(runner, topic) == store
    mine = [(key, h) for key, _v, h in runner.producer.logs[topic] if dict(h)["writer"] == runner.writer]
    assert [key for key, _h in mine[1:]] == [k("n:email:a")]  # after its fence: only the dangling key


class Ends:
    """The end offsets of the fake producer's changelogs, as the runner's ``ends_reader`` asks them."""

    def __init__(self, producer):
        self.producer = producer

    async def end_offsets(self, tps):
        return {tp: len(self.producer.logs.get(tp.topic, [])) for tp in tps}


def test_with_no_contact_coming_an_erasure_tombstone_reaches_the_store_at_the_next_look(
    world, full_contact, monkeypatch
):
    runner, names, codec, tp, log = world
    runner.writer = None
    Assignment(runner, monkeypatch)
    run(runner.assigned({tp}))
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    runner.ends_reader = Ends(runner.producer)
    run(runner.look_at_changelogs())  # nothing new: nothing read, nothing written
    sent = len(runner.producer.sent)
    topic = names.contacts_changelog
    erased = next(iter(runner.contacts_table.snapshot()))
    runner.producer.logs[topic].append((k(erased), None, []))
    runner.producer.ends[(topic, 0)] = len(runner.producer.logs[topic])
    run(runner.look_at_changelogs())
    assert erased not in runner.contacts_table.snapshot() and runner.contacts_table.get(erased) is None
    assert len(runner.producer.sent) == sent  # a tombstone is applied, not answered
    position = runner.contacts_table.store.position()
    assert position.offset == position.verified == len(runner.producer.logs[topic]) - 1
    run(runner.revoked())
    runner.producer.logs[topic].append((k(next(iter(runner.contacts_table.snapshot()))), None, []))
    before = runner.contacts_table.snapshot()
    run(runner.look_at_changelogs())  # no longer the owner: it does not look
    assert runner.contacts_table.snapshot() == before
