"""A live projector gathers a trickle of records into one batch (projectors/engine/runner.py,
``gather`` and ``batch_wait``): a batch costs about the same for one record as for hundreds, so
without the wait a projector at a trickle writes one transaction per record or two. The consumer
and the writes are fakes."""

from __future__ import annotations

from projectors.engine.runner import gather
from tests.unit.projectors.test_engine_ahead import TOPIC, TP, Consumer, Msg, projector_over, run


def batches_written(batch_wait: float, per_poll: int, size: int = 30, batch_size: int = 10) -> list[int]:
    consumer = Consumer(size=size, per_poll=per_poll)
    projector, written = projector_over(consumer)
    projector.shape_ahead = False
    projector.batch_size = batch_size
    projector.batch_wait = batch_wait
    run(projector, consumer, {(TOPIC, 0): size})
    return [first for first, _ in written]


def test_records_arriving_one_by_one_are_written_as_one_batch_with_a_wait():
    assert batches_written(batch_wait=30.0, per_poll=1) == [0, 10, 20]  # batch_size records each


def test_without_a_wait_each_poll_is_a_batch():
    assert batches_written(batch_wait=0.0, per_poll=1) == list(range(30))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Trickle:
    """Polls answer the records given, one list per poll; each poll takes its timeout when empty."""

    def __init__(self, clock: Clock, answers: list[dict]):
        self.clock, self.answers, self.asked = clock, answers, []

    def poll(self, timeout_ms, max_records):
        self.asked.append((timeout_ms, max_records))
        if self.answers:
            self.clock.now += 0.01
            return self.answers.pop(0)
        self.clock.now += timeout_ms / 1000
        return {}


def test_gather_stops_at_the_wait_and_keeps_each_partition_in_order():
    clock = Clock()
    a, b = TP(TOPIC, 0), TP(TOPIC, 1)
    consumer = Trickle(clock, [{a: [Msg(1)]}, {b: [Msg(7)], a: [Msg(2)]}])
    polled = gather(consumer, {a: [Msg(0)]}, wait=0.1, max_records=100, clock=clock)
    assert {tp: [m.offset for m in ms] for tp, ms in polled.items()} == {a: [0, 1, 2], b: [7]}
    assert clock.now <= 0.1 + 1e-9  # no poll past the wait
    assert [m for _, m in consumer.asked] == [99, 98, 96]  # never more than max_records in all


def test_gather_stops_at_max_records_without_waiting():
    clock = Clock()
    a = TP(TOPIC, 0)
    consumer = Trickle(clock, [{a: [Msg(1), Msg(2)]}, {a: [Msg(3)]}])
    polled = gather(consumer, {a: [Msg(0)]}, wait=60, max_records=3, clock=clock)
    assert [m.offset for m in polled[a]] == [0, 1, 2]
    assert len(consumer.asked) == 1
