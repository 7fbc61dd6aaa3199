"""streams.stage.StageContext.produce: a stage batch's records go to the producer as producer
batches, one per topic partition (not one send per record), each record where aiokafka's default
partitioner puts its key, in order within its partition; the changelog position a table store
remembers is its last record's offset once acknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata, TopicPartition

from streams.stage import Outputs, StageContext

PARTITIONS = {"out": [0, 1, 2, 3, 4, 5], "tbl-changelog": [0, 1, 2, 3, 4, 5]}


class FakeAiokafka:
    """The parts of AIOKafkaProducer the stage uses; every batch acknowledged at base offset 100."""

    def __init__(self, batch_size: int = 16 * 1024):
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes, list]]]] = []
        self.send_calls = 0  # records through send (metadata wait, serializer, partitioner)
        self.appended = 0  # records appended to a waiting batch, however
        cluster = SimpleNamespace(
            partitions_for_topic=lambda t: set(PARTITIONS[t]),
            available_partitions_for_topic=lambda t: set(PARTITIONS[t]),
        )

        async def wait_on_metadata(topic):
            return None

        self.client = SimpleNamespace(cluster=cluster, _wait_on_metadata=wait_on_metadata)
        self._txn_manager = None
        self._request_timeout_ms = 40_000
        producer = self

        class Accumulator:
            def __init__(self):
                self._batches: dict = {}  # topic partition -> batches not yet sent
                self._closed, self._exception = False, None

            async def add_message(self, tp, key, value, timeout, timestamp_ms=None, headers=()):
                """What send hands a record to once its partition is known."""
                return producer._append(tp.topic, value, key=key, partition=tp.partition, headers=headers)

        self._message_accumulator = Accumulator()

    def waiting_batch(self, topic: str, partition: int):
        """A producer batch of the accumulator still waiting to be sent (linger, a request in
        flight): ``append`` as aiokafka's ``MessageBatch.append``, a future per record."""
        producer = self

        class Waiting:
            def append(self, key, value, timestamp_ms, _create_future, headers=()):
                return producer._append(topic, value, key=key, partition=partition, headers=headers)

        return Waiting()

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send(self, topic, value, *, key, partition, headers):  # the per-record path
        self.send_calls += 1
        return self._append(topic, value, key=key, partition=partition, headers=headers)

    def _append(self, topic, value, *, key, partition, headers):
        if not isinstance(key, bytes) or not isinstance(value, bytes) or not isinstance(partition, int):
            raise AssertionError("a record reaches the accumulator as bytes, with its partition")
        self.appended += 1
        if (topic, partition) not in self._message_accumulator._batches:
            raise AssertionError("one send per record where no producer batch is waiting")
        self.sent.append((topic, partition, [(key, value, list(headers))]))
        fut = asyncio.get_running_loop().create_future()
        offset = 200 + self.appended
        fut.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), offset, -1, 0, 0))
        return fut

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        buf = batch._build()
        records = [(r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(bytes(buf))]
        self.sent.append((topic, partition, records))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), 100, -1, 0, 0))
        return fut


class FakeStore:
    def __init__(self):
        self.persisted: dict = {}

    def set_persisted_offset(self, tp, offset) -> None:
        self.persisted[tp] = offset


def _ctx(aio: FakeAiokafka) -> StageContext:
    ctx = StageContext.__new__(StageContext)
    ctx.app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: aio))
    ctx.produced = lambda topic: SimpleNamespace(inc=lambda n: None)
    ctx._partitions = {}
    return ctx


class FakeTable:  # hashable, as faust's tables are
    def __init__(self):
        self.data = FakeStore()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "tbl-changelog")


def _table() -> FakeTable:
    return FakeTable()


def test_a_batch_goes_as_one_producer_batch_per_partition_in_order():
    aio = FakeAiokafka()
    out, table = Outputs(), _table()
    keys = [f"cust-{i % 7}".encode() for i in range(60)]
    for i, key in enumerate(keys):
        out.add("out", key, f"v{i}".encode(), {"event_id": f"e{i}"})
    for i in range(3):
        out.changelog.append((table, 2, f"k{i}".encode(), b"x"))

    async def run():
        await _ctx(aio).produce(out)
        await asyncio.sleep(0)  # the acknowledgment callbacks

    asyncio.run(run())
    assert aio.send_calls == 0
    by_tp = {(t, p): records for t, p, records in aio.sent}
    assert len(by_tp) == len(aio.sent)  # one producer batch per topic partition here
    partitioner = DefaultPartitioner()
    expected: dict[tuple[str, int], list] = {}
    for i, key in enumerate(keys):
        p = partitioner(key, PARTITIONS["out"], PARTITIONS["out"])
        expected.setdefault(("out", p), []).append((key, f"v{i}".encode(), [("event_id", f"e{i}".encode())]))
    expected[("tbl-changelog", 2)] = [(f"k{i}".encode(), b"x", []) for i in range(3)]
    assert by_tp == expected
    assert table.data.persisted == {("tbl-changelog", 2): 102}  # base offset 100 + the third record
    assert out.records == [] and out.changelog == []


def test_records_beyond_one_producer_batch_go_in_more_batches_in_order():
    aio = FakeAiokafka(batch_size=512)
    out = Outputs()
    values = [bytes([65 + i % 26]) * 100 for i in range(40)]
    for v in values:
        out.records.append(("out", b"k", v, None, 4))
    asyncio.run(_ctx(aio).produce(out))
    assert len(aio.sent) > 1
    assert all(t == "out" and p == 4 for t, p, _ in aio.sent)
    assert [v for _t, _p, records in aio.sent for _k, v, _h in records] == values


def test_a_partition_whose_last_producer_batch_still_waits_gets_its_records_appended_one_by_one():
    """send_batch would wait for that batch to leave (linger, a request in flight), and the stage
    with it; the records are appended to it one by one instead (the waiting batch's own append,
    not send: the partition is known and the records are bytes), in order, the other partitions as
    batches."""
    aio = FakeAiokafka()
    aio._message_accumulator._batches[TopicPartition("tbl-changelog", 1)] = [aio.waiting_batch("tbl-changelog", 1)]
    out, table = Outputs(), _table()
    for i in range(3):
        out.changelog.append((table, 1, f"k{i}".encode(), b"x"))
    out.records.append(("out", b"k", b"v", None, 0))

    async def run():
        await _ctx(aio).produce(out)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert (aio.appended, aio.send_calls) == (3, 0)  # appended to the waiting batch, not through send
    singles = [records for t, p, records in aio.sent if (t, p) == ("tbl-changelog", 1)]
    assert singles == [[(f"k{i}".encode(), b"x", [])] for i in range(3)]
    assert [(t, p) for t, p, _ in aio.sent if t == "out"] == [("out", 0)]
    assert table.data.persisted == {("tbl-changelog", 1): 203}  # the third record's own offset
