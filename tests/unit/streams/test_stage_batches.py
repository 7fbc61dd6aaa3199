"""``streams.stage._Batches``: a stage batch's records for a partition whose previous producer batch
still waits in the producer (lingering, or behind a request in flight) join that batch, in order,
each with its own acknowledgment, as aiokafka's ``add_message`` appends them; a closed producer
refuses them as ``add_message`` does. A real aiokafka producer, never started (no broker)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.structs import TopicPartition

from streams.stage import _Batches

TP = TopicPartition("t", 0)


def _with_waiting_batch(body) -> None:
    async def run():
        producer = AIOKafkaProducer(bootstrap_servers="localhost:1")
        acc = producer._message_accumulator
        waiting = acc._append_batch(acc.create_builder(), TP)  # the partition's batch, not sent yet
        assert waiting.append(b"k0", b"v0", None) is not None
        try:
            await body(producer, acc, waiting)
        finally:
            acc._batches.clear()  # nothing to flush: the producer never started
            await producer.stop()

    asyncio.run(run())


def test_records_for_a_partition_whose_batch_waits_join_it_in_order_each_acknowledged():
    async def body(producer, acc, waiting):
        batches = _Batches(producer)
        places = [batches.append("t", 0, b"k%d" % i, b"v%d" % i, [("event_id", b"e%d" % i)]) for i in (1, 2, 3)]
        assert places == [(0, 0), (1, 0), (2, 0)]  # one acknowledgment per record, each its own
        futures = (await batches.send())[("t", 0)]
        assert list(acc._batches[TP]) == [waiting] and waiting.record_count == 4
        waiting.done(base_offset=100)
        assert [f.result().offset for f in futures] == [101, 102, 103]
        assert [f.result().topic for f in futures] == ["t"] * 3

    _with_waiting_batch(body)


def test_a_closed_producer_refuses_them_as_aiokafka_does():
    async def body(producer, acc, waiting):
        batches = _Batches(producer)
        batches.append("t", 0, b"k1", b"v1", [])
        acc._closed = True
        with pytest.raises(ProducerClosed):
            await batches.send()
        assert waiting.record_count == 1  # nothing joined the waiting batch

    _with_waiting_batch(body)
