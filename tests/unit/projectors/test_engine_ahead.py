"""The engine shapes the next batch while one is written (projectors/engine/runner.py, ``_loop``):
the overlap itself, and that a batch shaped ahead is never written out of turn (a retry, the end
of a run). The consumer and the writes are fakes; the batches are tags."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from projectors.contacts import Contacts
from projectors.engine.runner import Projector, Shaped
from schemas.codec import SingleObjectCodec
from schemas.keystore import KeyStoreUnavailable
from threadline.settings import Settings

TOPIC = "contacts.resolved.v1"


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Msg:
    offset: int


class Consumer:
    """One partition of ``size`` records, polled ``per_poll`` at a time from ``position``."""

    def __init__(self, size: int, per_poll: int):
        self.size, self.per_poll, self.position, self.polls = size, per_poll, 0, 0

    def highwater(self, tp):
        return None

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        if self.position >= self.size:
            return {}
        end = min(self.position + self.per_poll, self.size)
        batch = {TP(TOPIC, 0): [Msg(o) for o in range(self.position, end)]}
        self.position = end
        return batch


def first_offset(polled) -> int:
    return next(iter(polled.values()))[0].offset


def projector_over(consumer: Consumer) -> tuple[Projector, list]:
    """A projector whose writes record (first offset of the batch, first offset it was shaped from)."""
    projector = Projector(Settings(), Contacts(), codec=SingleObjectCodec(), shape_ahead=True)
    written: list = []
    projector._shape = lambda polled: Shaped(batch=first_offset(polled))  # type: ignore[method-assign]

    def project(conn, producer, dead_letters, polled, shaped, build):
        written.append((first_offset(polled), shaped.batch))
        last = next(iter(polled.values()))[-1].offset + 1
        projector.stats.positions[(TOPIC, 0)] = last
        projector.stats.batches += 1

    def seek(conn, c, tps):
        c.position = projector.stats.positions.get((TOPIC, 0), 0)

    projector._project = project  # type: ignore[method-assign]
    projector._seek_to_stored = seek  # type: ignore[method-assign]
    projector.stop_event.wait = lambda timeout=None: False  # type: ignore[method-assign]
    return projector, written


def run(projector: Projector, consumer: Consumer, stop_at: dict) -> None:
    projector._loop(None, consumer, None, None, [], None, None, stop_at, None)


def test_the_next_batch_is_shaped_on_another_thread_while_one_is_written():
    consumer = Consumer(size=30, per_poll=10)
    projector, written = projector_over(consumer)
    second_shaped = threading.Event()
    shaped_on: list[str] = []

    def shape(polled):
        shaped_on.append(threading.current_thread().name)
        if first_offset(polled) == 10:
            second_shaped.set()
        return Shaped(batch=first_offset(polled))

    overlapped = []
    writes = projector._project

    def project(conn, producer, dead_letters, polled, shaped, build):
        if first_offset(polled) == 0:  # the first batch's write: the second is shaped meanwhile
            overlapped.append(second_shaped.wait(5))
        writes(conn, producer, dead_letters, polled, shaped, build)

    projector._shape = shape  # type: ignore[method-assign]
    projector._project = project  # type: ignore[method-assign]
    run(projector, consumer, {(TOPIC, 0): 30})
    assert overlapped == [True]
    assert written == [(0, 0), (10, 10), (20, 20)]
    assert all(name.startswith("shape-") for name in shaped_on)


def test_a_batch_shaped_ahead_is_dropped_when_the_batch_before_it_is_read_again():
    consumer = Consumer(size=30, per_poll=10)
    projector, written = projector_over(consumer)
    writes, failed = projector._project, []

    def project(conn, producer, dead_letters, polled, shaped, build):
        if first_offset(polled) == 10 and not failed:  # the key store did not answer: read again
            failed.append(10)
            raise KeyStoreUnavailable("key store (PostgreSQL) did not answer")
        writes(conn, producer, dead_letters, polled, shaped, build)

    projector._project = project  # type: ignore[method-assign]
    run(projector, consumer, {(TOPIC, 0): 30})
    assert failed == [10]
    assert written == [(0, 0), (10, 10), (20, 20)]  # each batch once, in order, with its own rows


def test_a_live_projector_shapes_its_batches_on_its_own_thread_and_a_rebuild_ahead():
    from projectors.read_models import read_model_projector

    consumer = Consumer(size=20, per_poll=10)
    projector, written = projector_over(consumer)
    projector.shape_ahead = False
    shaped_on: list[str] = []
    projector._shape = lambda polled: (
        shaped_on.append(threading.current_thread().name)
        or Shaped(  # type: ignore[method-assign]
            batch=first_offset(polled)
        )
    )
    run(projector, consumer, {(TOPIC, 0): 20})
    assert written == [(0, 0), (10, 10)] and shaped_on == [threading.current_thread().name] * 2
    assert not read_model_projector(Settings(), "support", codec=SingleObjectCodec()).shape_ahead
    assert read_model_projector(Settings(), "support", codec=SingleObjectCodec(), deferred=True).shape_ahead


def test_the_batch_that_ends_a_run_has_nothing_shaped_after_it():
    consumer = Consumer(size=50, per_poll=10)
    projector, written = projector_over(consumer)
    run(projector, consumer, {(TOPIC, 0): 20})
    assert written == [(0, 0), (10, 10)]
    assert consumer.position == 20  # nothing polled past the end of the run


def test_a_rebuild_writes_with_the_collector_paused_and_collects_between_batches(monkeypatch):
    """A rebuild keeps two full batches alive (one written, one shaped): the cyclic collector
    would walk them on every allocation-heavy step of the write, so it stays off for the run and
    collects every REBUILD_COLLECT_EVERY batches; a live projector leaves it alone."""
    import gc

    from projectors.engine import runner

    collected: list[int] = []
    monkeypatch.setattr(runner, "REBUILD_COLLECT_EVERY", 2)
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(projector.stats.batches) or 0)
    consumer = Consumer(size=50, per_poll=10)
    projector, written = projector_over(consumer)
    enabled_in_write: list[bool] = []
    writes = projector._project

    def project(*args):
        enabled_in_write.append(gc.isenabled())
        writes(*args)

    projector._project = project  # type: ignore[method-assign]
    assert gc.isenabled()
    run(projector, consumer, {(TOPIC, 0): 50})
    assert enabled_in_write == [False] * 5 and collected == [2, 4]
    assert gc.isenabled()  # on again after the run

    consumer = Consumer(size=20, per_poll=10)
    live, _ = projector_over(consumer)
    live.shape_ahead = False
    live_writes = live._project

    def live_project(*args):
        enabled_in_write.append(gc.isenabled())
        live_writes(*args)

    live._project = live_project  # type: ignore[method-assign]
    enabled_in_write.clear()
    run(live, consumer, {(TOPIC, 0): 20})
    assert enabled_in_write == [True, True]


class Half:
    """A projection whose shaping adds one row, then refuses records with an odd value: the
    refused record's row was added before it raised."""

    def new_batch(self) -> list:
        return []

    def shape(self, batch: list, decoded, message) -> None:
        batch.append(decoded)
        if decoded % 2:
            raise ValueError(f"odd {decoded}")


class IntCodec:
    def decode(self, value):
        return value


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: int


def test_a_refused_records_rows_are_not_written_and_a_failed_write_reshapes_each_record_alone():
    projector = Projector(Settings(), Contacts(), codec=SingleObjectCodec())
    projector.projection = Half()  # type: ignore[assignment]
    projector.codec = IntCodec()  # type: ignore[assignment]
    records = [Rec(TOPIC, 0, o, v) for o, v in enumerate([2, 3, 4, 5])]
    shaped = projector._shape({TP(TOPIC, 0): records})
    assert shaped.batch == [2, 4]  # 3 and 5 added their row, then were refused: not in the batch
    assert [(m.offset, reason) for m, reason in shaped.refused] == [
        (1, "record does not fit: ValueError('odd 3')"),
        (3, "record does not fit: ValueError('odd 5')"),
    ]
    assert shaped.count == 4 and [m.offset for m, _ in shaped.singles] == [0, 2]
    assert [projector._single(m, d) for m, d in shaped.singles] == [[2], [4]]

    clean = projector._shape({TP(TOPIC, 0): [Rec(TOPIC, 0, 0, 2), Rec(TOPIC, 0, 1, 6)]})
    assert clean.batch == [2, 6] and not clean.refused


def test_a_rebuild_writes_with_the_gil_handed_on_often_and_restores_the_interval():
    """While the shaping thread runs beside the writing one, the switch interval is
    SHAPE_AHEAD_SWITCH_S (the writer gets the GIL back soon after each answer from PostgreSQL);
    after the run it is what it was; a live projector leaves it alone."""
    import sys

    from projectors.engine import runner

    before = sys.getswitchinterval()
    assert before != runner.SHAPE_AHEAD_SWITCH_S
    seen: list[float] = []

    def watched(projector):
        writes = projector._project

        def project(*args):
            seen.append(sys.getswitchinterval())
            writes(*args)

        projector._project = project  # type: ignore[method-assign]
        return projector

    consumer = Consumer(size=30, per_poll=10)
    projector, _ = projector_over(consumer)
    run(watched(projector), consumer, {(TOPIC, 0): 30})
    assert seen == [runner.SHAPE_AHEAD_SWITCH_S] * 3
    assert sys.getswitchinterval() == before

    consumer = Consumer(size=20, per_poll=10)
    live, _ = projector_over(consumer)
    live.shape_ahead = False
    seen.clear()
    run(watched(live), consumer, {(TOPIC, 0): 20})
    assert seen == [before, before]
