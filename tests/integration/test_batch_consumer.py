"""``threadline.batch_consumer.BatchConsumer`` against the real broker: the part of
kafka-python's consumer the projector runner uses, with the same answers, over aiokafka."""

from __future__ import annotations

import threading
import time

import aiokafka.record.default_records as default_records
from kafka import TopicPartition

from threadline.batch_consumer import BatchConsumer
from threadline.kafka import make_producer


def _fill(settings, topic: str, per_partition: dict[int, int]) -> None:
    producer = make_producer(settings)
    for p, n in per_partition.items():
        for i in range(n):
            producer.send(topic, key=f"k{i}".encode(), value=f"{p}:{i}".encode(), partition=p, headers=[("h", b"x")])
    producer.flush()
    producer.close()


def _read_all(consumer: BatchConsumer, want: int, max_records: int, timeout: float = 30.0) -> list:
    got, polls = [], []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500, max_records=max_records)
        polls.append(sum(map(len, polled.values())))
        for records in polled.values():
            got.extend(records)
    assert all(n <= max_records for n in polls), polls
    return got


def test_it_reads_assigned_partitions_from_where_it_is_told_in_batches_of_at_most_max_records(settings, new_topic):
    topic = new_topic(partitions=2)
    _fill(settings, topic, {0: 30, 1: 20})
    consumer = BatchConsumer(settings, client_id="test-batch-consumer", max_poll_records=7)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1}
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]  # kafka-python's, as the runner's
        consumer.assign(tps)
        consumer.seek_to_beginning(tps[0])
        consumer.seek(tps[1], 15)
        got = _read_all(consumer, 30 + 5, max_records=7)
        assert len(got) == 35
        for p, first, n in ((0, 0, 30), (1, 15, 5)):
            mine = [r for r in got if r.partition == p]
            assert [r.offset for r in mine] == list(range(first, first + n))  # in order, none twice
            assert [r.value for r in mine] == [f"{p}:{i}".encode() for i in range(first, first + n)]
            assert all(r.topic == topic and r.key == f"k{r.offset}".encode() for r in mine)
            assert all(list(r.headers) == [("h", b"x")] and r.timestamp > 0 for r in mine)
        # the end offsets as of the last fetch, looked up with kafka-python's topic-partitions
        assert consumer.highwater(tps[0]) == 30 and consumer.highwater(tps[1]) == 20
        # read again from an offset it was told: the same records
        consumer.seek(tps[0], 28)
        again = _read_all(consumer, 2, max_records=7)
        assert [(r.partition, r.offset) for r in again] == [(0, 28), (0, 29)]
        # nothing more: an empty answer within the timeout, not an error
        t0 = time.monotonic()
        assert consumer.poll(timeout_ms=300) == {}
        assert time.monotonic() - t0 < 5
    finally:
        consumer.close()


def test_an_unknown_topic_has_no_partitions_and_close_stops_its_thread(settings, unique):
    consumer = BatchConsumer(settings, client_id="test-batch-consumer")
    thread = consumer._thread
    try:
        assert consumer.partitions_for_topic(f"test.{unique}.missing") is None
    finally:
        consumer.close()
        consumer.close()  # twice: nothing happens
    assert not thread.is_alive()
    assert thread not in threading.enumerate()


def test_records_are_parsed_by_aiokafkas_c_record_parser():
    # the reason it exists (kafka-python parses records in Python: ~3x the CPU per record)
    assert default_records.DefaultRecordBatch.__module__.startswith("aiokafka.record._crecords")
