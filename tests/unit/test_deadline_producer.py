"""threadline.async_producer.DeadlineProducer with a fake aiokafka producer: every send answers
within the deadline (the acknowledgment or KafkaUnavailable), a producer that missed it is
replaced, and a send runs in the caller's task (no task per send). No timing is asserted beyond
"within the deadline plus slack"."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from threadline.async_producer import DeadlineProducer
from threadline.errors import KafkaUnavailable
from threadline.settings import Settings


class FakeAioProducer:
    """``send`` returns a future the test resolves (or not); records the task each send ran in."""

    def __init__(self, mode: str = "ack"):
        self.mode, self.tasks, self.stopped = mode, [], False

    async def start(self):
        pass

    async def stop(self):
        self.stopped = True

    async def send(self, topic, *, value, key, headers):
        self.tasks.append(asyncio.current_task())
        if self.mode == "hang_send":
            await asyncio.sleep(3600)
        delivery = asyncio.get_running_loop().create_future()
        if self.mode == "ack":
            delivery.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(self.tasks) - 1, headers=headers))
        elif self.mode == "error":
            delivery.set_exception(KafkaConnectionError("broker gone"))
        return delivery  # "hang_ack": never resolved


def producer(*modes: str, deadline: float = 0.2):
    made = []

    def factory():
        made.append(FakeAioProducer(modes[min(len(made), len(modes) - 1)]))
        return made[-1]

    return DeadlineProducer(Settings(_env_file=None), deadline=deadline, factory=factory), made


def test_a_send_answers_the_acknowledgment_in_the_callers_task():
    async def run():
        p, made = producer("ack")
        await p.start()
        meta = await p.send("t", key=b"k", value=b"v", headers={"event_id": "e-1"})
        assert (meta.topic, meta.offset, meta.headers) == ("t", 0, [("event_id", b"e-1")])
        assert made[0].tasks == [asyncio.current_task()]  # no task of its own per send
        await p.close()

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["hang_send", "hang_ack"])
def test_a_send_that_misses_the_deadline_is_kafka_unavailable_and_the_producer_is_replaced(mode):
    async def run():
        p, made = producer(mode, "ack")
        await p.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(KafkaUnavailable, match="not acknowledged within"):
            await p.send("t", key=None, value=b"v")
        assert loop.time() - t0 < 0.2 + 1.0
        assert p.replaced == 1
        meta = await p.send("t", key=None, value=b"v")  # a new producer takes the next send
        assert meta.offset == 0 and len(made) == 2
        await asyncio.sleep(0)
        assert made[0].stopped
        await p.close()

    with capture_logs() as logs:  # the replacement is logged, whatever stream an earlier test configured
        asyncio.run(run())
    assert [e["reason"] for e in logs if e["event"] == "producer_replaced"] == ["no acknowledgment within 0.2 s"]


def test_a_kafka_error_is_kafka_unavailable_naming_it():
    async def run():
        p, _ = producer("error", "ack")
        await p.start()
        with pytest.raises(KafkaUnavailable, match="KafkaConnectionError"):
            await p.send("t", key=None, value=b"v")
        assert p.replaced == 1
        await p.close()

    with capture_logs() as logs:
        asyncio.run(run())
    assert [e["reason"] for e in logs if e["event"] == "producer_replaced"] == ["KafkaConnectionError"]


def test_the_gateways_partitioner_puts_every_key_where_the_default_one_does():
    from aiokafka.partitioner import DefaultPartitioner

    from threadline.async_producer import aiokafka_producer_config, keyed_partitioner

    default = DefaultPartitioner()
    keys = [f"chat_visitor:v-{i}".encode() for i in range(2000)] + [b"", b"email:giulia.rossi@example.it"]
    for parts in ([0, 1, 2, 3, 4, 5], list(range(12)), [0]):
        assert [keyed_partitioner(k, parts, parts) for k in keys * 2] == [default(k, parts, parts) for k in keys * 2]
    assert keyed_partitioner(None, [0, 1, 2], [1]) == 1  # no key: an available partition, as before
    assert aiokafka_producer_config(Settings(_env_file=None))["partitioner"] is keyed_partitioner


# Java's Utils.murmur2 of these keys (Kafka's own UtilsTest), as signed 32-bit ints
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_fast_murmur2_is_javas_and_aiokafkas():
    from aiokafka.partitioner import murmur2

    from threadline.async_producer import murmur2_fast

    for key, signed in JAVA_MURMUR2.items():
        assert murmur2_fast(key) == signed & 0xFFFFFFFF
    for n in range(70):  # every tail length, keys of 0 to 69 bytes, each byte value
        for data in (bytes(range(n)), bytes(255 - i for i in range(n)), bytes((i * 37 + n) % 256 for i in range(n))):
            assert murmur2_fast(data) == murmur2(data)


@given(st.binary(max_size=300))
def test_the_fast_murmur2_gives_aiokafkas_hash_of_any_bytes(data):
    from aiokafka.partitioner import murmur2

    from threadline.async_producer import murmur2_fast

    assert murmur2_fast(data) == murmur2(data)


def with_started(*modes: str, deadline: float, body) -> None:
    """``body(producer, made)`` in an event loop with a started DeadlineProducer, closed afterwards."""

    async def run():
        p, made = producer(*modes, deadline=deadline)
        await p.start()
        try:
            await body(p, made)
        finally:
            await p.close()

    asyncio.run(run())


def test_the_deadlines_of_sends_in_flight_share_one_timer_not_one_each():
    async def body(p, _made):
        loop = asyncio.get_running_loop()
        timers = []  # every timer of asyncio's loop goes through call_at (call_later too)
        real_at = loop.call_at
        loop.call_at = lambda *a, **kw: timers.append(a) or real_at(*a, **kw)  # type: ignore[method-assign]
        metas = await asyncio.gather(*(p.send("t", key=None, value=b"v") for _ in range(50)))
        assert len(metas) == 50 and len(timers) <= 1, timers

    with_started("ack", deadline=5.0, body=body)


def test_a_send_cancelled_by_its_caller_is_cancelled_not_kafka_unavailable():
    async def body(p, _made):
        task = asyncio.ensure_future(p.send("t", key=None, value=b"v"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.replaced == 0

    with_started("hang_ack", deadline=5.0, body=body)


def test_a_send_past_its_deadline_beside_sends_that_are_acknowledged_fails_alone():
    async def body(p, made):
        made[0].mode = "hang_ack"
        hanging = asyncio.ensure_future(p.send("t", key=None, value=b"late"))
        await asyncio.sleep(0)
        made[0].mode = "ack"
        acked = [await p.send("t", key=None, value=b"v") for _ in range(3)]
        with pytest.raises(KafkaUnavailable, match="not acknowledged within"):
            await hanging
        assert [m.offset for m in acked] == [1, 2, 3]

    with capture_logs():
        with_started("ack", deadline=0.2, body=body)
