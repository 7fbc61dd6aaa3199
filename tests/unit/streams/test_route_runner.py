"""streams/route_runner.py without a broker: contacts forwarded unchanged to the graph topic, what
cannot be resolved to the DLQ, the order of a batch (forwarded, acknowledged, then committed), the
broker down, a revoked partition, and the upgrade from the faust agent."""

from __future__ import annotations

import asyncio

import pytest

import schemas
from connectors.contact import to_record
from schemas.codec import SingleObjectCodec
from streams.route_runner import RouteRunner, route_group
from streams.stage import StageContext
from streams.topology import StreamTopics
from threadline.settings import CodecKind, Settings

from ..conftest import RECORDED_AT
from .fake_kafka import BrokerDownProducer, FakeAdmin, FakeConsumer, FakeProducer, Record


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def world(tmp_path):
    from aiokafka.structs import TopicPartition

    names = StreamTopics.prefixed("u")
    codec = SingleObjectCodec()
    ctx = StageContext(None, "unit", names.dlq)  # type: ignore[arg-type]
    settings = Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT)
    runner = RouteRunner(settings, "unit", names.contacts, names.graph, ctx, codec)
    runner._partitions = {names.dlq: list(range(6))}
    log: list = []
    tp = TopicPartition(names.contacts, 3)
    runner.producer, runner.consumer = FakeProducer(log), FakeConsumer(log, tp)
    return runner, names, codec, tp, log


def contacts(full_contact, codec, names, n: int = 4, first: int = 10) -> list[Record]:
    out = []
    for i in range(n):
        record = to_record(full_contact.model_copy(update={"provider_id": f"p-{i}"}), RECORDED_AT)
        value = codec.encode(names.contacts, schemas.CONTACT, record)
        out.append(Record(names.contacts, 3, first + i, f"key-{i}".encode(), value, headers=()))
    return out


def test_the_group_is_the_app_ids_route_group():
    assert route_group("threadline-streams") == "threadline-streams-route"


def test_contacts_are_forwarded_unchanged_in_order_then_acknowledged_then_committed(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)
    run(runner._batch(tp, records))
    assert runner.producer.sent == [(names.graph, 0, r.key, r.value, [("kind", b"contact")]) for r in records]
    kinds = [entry[0] for entry in log]
    assert kinds == ["send", "ack", "commit"] and log[-1] == ("commit", {tp: 14})


def test_what_cannot_be_resolved_goes_to_the_dlq_with_its_bytes_and_the_partition_moves_on(world, full_contact):
    runner, names, codec, tp, log = world
    good = contacts(full_contact, codec, names, 2)
    bare = {**to_record(full_contact, RECORDED_AT), "identities": []}
    records = [
        good[0],
        Record(names.contacts, 3, 11, b"k", b"\x00garbage", headers=()),
        Record(names.contacts, 3, 12, b"k", codec.encode(names.contacts, schemas.CONTACT, bare), headers=()),
        Record(names.contacts, 3, 13, good[1].key, good[1].value, headers=()),
    ]
    run(runner._batch(tp, records))
    forwarded = [r for r in runner.producer.sent if r[0] == names.graph]
    letters = [r for r in runner.producer.sent if r[0] == names.dlq]
    assert [r[3] for r in forwarded] == [good[0].value, good[1].value]
    assert [r[3] for r in letters] == [records[1].value, records[2].value]  # the raw payloads
    reasons = [dict(r[4])["reason"].decode() for r in letters]
    assert "identities" in reasons[1] and reasons[0]
    assert log[-1] == ("commit", {tp: 14})


def test_a_batch_the_broker_did_not_take_is_read_again_and_not_committed(world, full_contact):
    runner, names, codec, tp, log = world
    records = contacts(full_contact, codec, names)
    working = runner.producer
    runner.producer = BrokerDownProducer(log)
    run(runner._batch(tp, records))  # no exception: the stage goes on
    assert ("seek", records[0].offset) in log and runner.pause > 0
    assert not [entry for entry in log if entry[0] == "commit"]
    runner.producer = working
    run(runner._batch(tp, records))
    assert log[-1] == ("commit", {tp: 14}) and len(working.sent) == len(records)


def test_a_partition_gone_from_the_assignment_gets_no_write_and_no_commit(world, full_contact):
    runner, names, codec, tp, log = world
    runner.consumer.owned = set()
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    assert log == [] and runner.producer.sent == []


def test_a_failed_commit_is_logged_and_the_runner_goes_on(world, full_contact):
    """Another generation owns the partition: it forwards the batch again (duplicates the graph
    takes as such); this worker raises nothing out of the batch."""
    runner, names, codec, tp, log = world
    runner.consumer.fail = True
    run(runner._batch(tp, contacts(full_contact, codec, names)))
    assert not [entry for entry in log if entry[0] == "commit"] and runner.batches == 0


def test_upgraded_from_the_faust_agent_each_partition_starts_at_the_faust_groups_commit(
    world, full_contact, monkeypatch
):
    import aiokafka.admin
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    runner, names, codec, tp, log = world
    other = TopicPartition(names.contacts, 4)
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", FakeAdmin)
    monkeypatch.setattr(FakeAdmin, "offsets", {"unit": {tp: OffsetAndMetadata(12, "")}})
    runner.consumer.committed_offset = None
    run(runner.assigned({tp, other}))
    assert runner._start_at == {tp: 12}  # the other partition: never committed by faust, from its beginning
    records = contacts(full_contact, codec, names)  # offsets 10-13
    run(runner._batch(tp, records))
    assert [r[3] for r in runner.producer.sent] == [r.value for r in records[2:]]
    assert log[-1] == ("commit", {tp: 14})
