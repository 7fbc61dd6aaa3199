"""The projector runner: event topics → one projection, effectively once.

The runner owns the consume loop, batching, dead letters and the commit order; what records
become (rows, tables, the schema written) is the projection's (``Projection``:
``projectors/read_models.py`` for support, sales and marketing, ``projectors/contacts.py`` for
``/contacts``). Schema lifecycle is ``engine/schema.py``, the tracking rows ``engine/tracking.py``.

Offsets come from PostgreSQL, never from a consumer group: the runner assigns itself every
partition of its source topics and seeks to the tracking rows, so a crash anywhere replays
nothing twice into the tables. One instance per projector name writes at a time (a session
advisory lock); a second one waits as a standby.

Commit order of one batch:
  1. poll up to ``batch_size`` records from the assigned partitions (with ``batch_wait``, and what
     else arrives within it: ``gather``);
  2. decode the batch (``decode_batch``: the codec's batch hook ``prefetch`` first, so an opening
     codec asks the key store once per batch, docs/privacy.md), then shape each record
     (``Projection.shape``: pure); what does not decode or shape is produced to projections.dlq.v1
     (``threadline.dlq.DeadLetters``) and acknowledged before step 3; a codec whose dependency
     does not answer (RetryableError: the registry, the key store) dead-letters nothing: the
     batch is read again from the tracking rows after a backoff. With ``shape_ahead`` (a
     rebuild's projector; never with an outbox) the next batch is polled (what is already
     fetched) and decoded and shaped on a thread of its own while this one is written (steps
     3-4): pure work beside PostgreSQL's; a batch shaped ahead and not written (a swap, a retry,
     the end of a run) is forgotten and read again from the tracking rows;
  3. in ONE PostgreSQL transaction:
       a. check that the schema written is still the build the runner opened (a replay may have
          swapped a new one in: then the batch is dropped and the runner re-seeks);
       b. write the rows (``Projection.write``); if PostgreSQL refuses them
          (RECORD_WRITE_ERRORS), retry record by record, each in a savepoint; a record refused
          alone is dead-lettered with the reason and acknowledged before the commit;
       c. queue the outbox (``Projection.outbox``: the customers whose profiles change);
       d. write the tracking rows: the next offset of every partition the batch read;
     then commit: rows and position land together or not at all;
  4. after the commit, publish the outbox from the committed state (customer-profiles.v1), and
     unqueue what Kafka acknowledged.
A lost PostgreSQL connection is retried with backoff; the runner then resumes from its tracking
rows (the batch being written never committed). A dead letter not acknowledged in time rolls the
batch back: it is read again from the tracking rows once Kafka takes writes.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg
from kafka import TopicPartition

from projectors.engine import schema as schemas_
from projectors.engine.instruments import Instruments
from projectors.engine.tracking import stored_offsets, write_offsets
from schemas.codec import Codec
from schemas.keystore import dlq_sealer, make_reader_codec
from threadline.batch_consumer import BatchConsumer
from threadline.catalog import CONTACTS_RESOLVED, CONVERSATIONS, IDENTITIES, PROJECTIONS_DLQ
from threadline.dlq import DeadLetters
from threadline.errors import ConfigError, DecodeError, KafkaUnavailable, RetryableError
from threadline.kafka import BoundedProducer
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.projector")

DEFAULT_BATCH = 2000
REBUILD_COLLECT_EVERY = 10  # batches between two collections while a rebuild's collector is paused
# The interpreter's switch interval while a shaping thread runs beside the writing one
# (``switching_often``); Python's default is 5 ms.
SHAPE_AHEAD_SWITCH_S = 0.001
ASSIGN_TIMEOUT = 60.0
RECONNECT_FIRST, RECONNECT_MAX = 0.5, 10.0  # backoff (seconds) while PostgreSQL does not answer

# A write that fails with one of these is about the rows written, not the database: the batch is
# retried record by record, and a record that fails alone goes to the DLQ. Data exceptions (22xxx:
# NUL in text, a value out of range, bad JSON), integrity violations (23xxx), limits (54xxx: an
# index row too large), and what psycopg raises adapting a Python value (a string it cannot encode).
RECORD_WRITE_ERRORS = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
    UnicodeError,
    ValueError,
    TypeError,
    OverflowError,
)
# The connection is gone (PostgreSQL restarted, the network failed): reconnect and resume.
POSTGRES_LOST = (psycopg.OperationalError, psycopg.InterfaceError)


def write_failure(exc: BaseException, target: str) -> str:
    """The DLQ reason of a record PostgreSQL would not take (it may quote the value: DLQ only, never logs)."""
    state = getattr(exc, "sqlstate", None)
    return f"not writable to {target}: {type(exc).__name__}{f' {state}' if state else ''}: {exc}"


def shaping_failure(exc: BaseException) -> str:
    """The DLQ reason of a record that does not decode or shape."""
    return exc.reason if isinstance(exc, DecodeError) else f"record does not fit: {exc!r}"


@dataclass(frozen=True)
class Sources:
    """The topics a projection reads; tests and replays pass their own."""

    contacts: str | None = CONTACTS_RESOLVED.name
    conversations: str | None = CONVERSATIONS.name
    identities: str | None = IDENTITIES.name

    def topics(self) -> list[str]:
        return [t for t in (self.contacts, self.conversations, self.identities) if t]


def decode_batch(codec: Codec, polled: dict[Any, list[Any]]) -> list[tuple[Any, Any, Exception | None]]:
    """(message, decoded, None) or (message, None, the error) for every record of a polled batch,
    in order. A codec with a batch hook (``prefetch(values)``: the opening codec asks the key store
    once for the keys of the whole batch, docs/privacy.md) is given every value first, and the
    records are decoded right after it, within the hook's window. A RetryableError (a dependency
    of the codec not answering) is raised, not paired: it is no record's fault."""
    prefetch = getattr(codec, "prefetch", None)
    if prefetch is not None:
        prefetch([m.value for messages in polled.values() for m in messages])
    out: list[tuple[Any, Any, Exception | None]] = []
    for messages in polled.values():
        for m in messages:
            try:
                out.append((m, codec.decode(m.value), None))
            except RetryableError:
                raise
            except Exception as exc:  # whatever decoding raises is this record's fault
                out.append((m, None, exc))
    return out


class ShapedBatch(Protocol):
    skipped_as_of: int

    def __len__(self) -> int: ...

    def extend(self, other: Any) -> None: ...


class Outbox(Protocol):
    """What is published after a commit, from committed rows (projectors/profiles.py)."""

    def queue(self, cur: psycopg.Cursor, batch: Any) -> None: ...

    def publish(self, conn: psycopg.Connection, producer: Any) -> int: ...


class Projection(Protocol):
    """What records become. ``name`` keys the tracking rows, metrics and dead letters; ``target``
    is what it writes (named in a refused record's DLQ reason)."""

    name: str
    target: str
    outbox: Outbox | None

    def prepare(self, conn: psycopg.Connection) -> None:
        """Schema lifecycle on every (re)connect, after the migrations, before the writer lock."""

    def current_build(self, conn: psycopg.Connection) -> str | None:
        """The build written to (None: the target is never swapped)."""

    def hold_build(self, cur: psycopg.Cursor) -> str | None:
        """In every batch's transaction, first: take whatever keeps a swap out until the commit,
        and return the build now written to."""

    def new_batch(self) -> ShapedBatch: ...

    def shape(self, batch: Any, decoded: Any, message: Any) -> None:
        """Add one decoded record; raises for a record this projection cannot use. Pure."""

    def write(self, cur: psycopg.Cursor, batch: Any) -> None:
        """Write a batch inside the caller's transaction."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """Decoding and shaping a batch makes thousands of small objects that all live until the
    batch is written: the cyclic collector would walk them over and over while they pile up
    (measured: about a third of a rebuild's CPU). Nothing made here forms a cycle (refcounting
    frees it all), so the collector waits until the batch is shaped."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def switching_often(seconds: float = SHAPE_AHEAD_SWITCH_S) -> Iterator[None]:
    """The GIL handed on every ``seconds`` instead of every 5 ms (the default), for the while.

    With a thread shaping the next batch beside it, the writing thread waits for the GIL after
    each answer from PostgreSQL until the shaping thread is made to let go: up to a switch
    interval per statement, and a batch makes about ten of them. Measured on 100,000 bench
    contacts (docs/benchmarks.md, "Rebuild: a compiled reader, the GIL handed on sooner")."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@dataclass
class Shaped:
    """A polled batch decoded and shaped (``Projector._shape``): its rows, the records they came
    from with what they decoded to (a failed write is retried record by record: each is shaped
    again alone, ``Projector._single``), what was refused and why, how many records."""

    batch: Any
    singles: list[tuple[Any, Any]] = field(default_factory=list)
    refused: list[tuple[Any, str]] = field(default_factory=list)
    count: int = 0


def gather(consumer: Any, polled: dict, wait: float, max_records: int, clock=time.monotonic) -> dict:
    """``polled`` with what else arrives within ``wait`` seconds, up to ``max_records`` records in
    all: a live projector's batch costs about the same for one record as for hundreds (a
    transaction, the tracking rows, the aggregates and profiles of what it touched), so at a
    trickle of records a short wait makes one batch where there would be many. Each partition's
    records stay in order."""
    count = sum(len(messages) for messages in polled.values())
    deadline = clock() + wait
    while count < max_records:
        left = deadline - clock()
        if left <= 0:
            break
        more = consumer.poll(timeout_ms=max(1, int(left * 1000)), max_records=max_records - count)
        for tp, messages in more.items():
            polled[tp] = [*polled.get(tp, ()), *messages]
            count += len(messages)
    return polled


def _reached(positions: dict[tuple[str, int], int], stop_at: dict[tuple[str, int], int]) -> bool:
    return all(positions.get(k, 0) >= v for k, v in stop_at.items())


def _dropped(pending: tuple[dict, Future] | None) -> None:
    """Let a batch being shaped ahead finish and forget it (it is read again from the tracking rows)."""
    if pending is not None:
        wait([pending[1]])
    return None


class SchemaSwapped(Exception):
    """The schema was replaced by a rebuild since this projector looked: re-seek and go on."""


@dataclass
class RunStats:
    events: int = 0
    rows: int = 0
    dead_letters: int = 0
    batches: int = 0
    skipped_as_of: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


class Projector:
    """Runs ``projection`` over ``sources``."""

    def __init__(
        self,
        settings: Settings,
        projection: Projection,
        *,
        sources: Sources = Sources(),
        codec: Codec | None = None,
        batch_size: int = DEFAULT_BATCH,
        shape_ahead: bool = False,
        batch_wait: float = 0.0,
    ):
        if not sources.topics():
            raise ConfigError(f"projector {projection.name}: no source topic")
        self.settings = settings
        self.projection = projection
        self.name = projection.name
        self.sources = sources
        # the one codec of every projection: opens sealed records when privacy is on (docs/privacy.md)
        self.codec = make_reader_codec(settings, codec)
        self.batch_size = batch_size
        # the next batch shaped on a thread while one is written: for a rebuild, where every batch
        # is full (a live projector with its batches of a few records keeps one thread)
        self.shape_ahead = shape_ahead
        # seconds a batch waits for more records after its first ones (``gather``): live read
        # models (THREADLINE_PROJECTION_BATCH_WAIT_MS); 0 for a rebuild, whose batches are full
        self.batch_wait = batch_wait
        self.stop_event = threading.Event()
        self.stats = RunStats()
        self.instruments = Instruments(f"projector:{self.name}")

    # -- set-up -------------------------------------------------------------------------------
    def _assign(self, consumer: BatchConsumer) -> list[TopicPartition]:
        tps = []
        deadline = time.monotonic() + ASSIGN_TIMEOUT
        for topic in self.sources.topics():
            parts = consumer.partitions_for_topic(topic)
            while not parts:
                if time.monotonic() > deadline:
                    raise ConfigError(f"topic {topic} does not exist (run `threadline topics apply`)")
                time.sleep(0.2)
                parts = consumer.partitions_for_topic(topic)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        return tps

    def _seek_to_stored(self, conn, consumer: BatchConsumer, tps: list[TopicPartition]) -> None:
        stored = stored_offsets(conn, self.name)
        for tp in tps:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)
        self.stats.positions = {(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), 0) for tp in tps}

    # -- the loop -----------------------------------------------------------------------------
    def run(
        self,
        *,
        max_batches: int | None = None,
        stop_at: dict[tuple[str, int], int] | None = None,
        on_batch: Callable[[RunStats], None] | None = None,
    ) -> RunStats:
        """Project until stopped, ``max_batches`` batches, or every partition reached ``stop_at``.

        A lost PostgreSQL connection (a restart, a network cut) is not the end: the projector
        reconnects with backoff until PostgreSQL answers again, re-takes its writer lock and
        resumes from the offsets stored there (the batch it was writing never committed)."""
        consumer = producer = dead_letters = None
        tps: list[TopicPartition] = []
        delay = RECONNECT_FIRST
        try:
            while not self.stop_event.is_set():
                conn = None
                try:
                    # PostgreSQL first: the migrations and the projection's schema exist as soon as it answers
                    conn = schemas_.connect(self.settings, f"projector:{self.name}")
                    schemas_.migrate(conn)
                    self.projection.prepare(conn)
                    if consumer is None:
                        # aiokafka's C record parser, fetching on a thread of its own (no group:
                        # the offsets are the tracking rows)
                        consumer = BatchConsumer(
                            self.settings, client_id=f"projector-{self.name}", max_poll_records=self.batch_size
                        )
                        # every DLQ send and wait within THREADLINE_PRODUCE_DEADLINE_SECONDS (KafkaUnavailable)
                        producer = BoundedProducer.from_settings(self.settings, client_id=f"projector-{self.name}")
                        dead_letters = DeadLetters(
                            producer,
                            PROJECTIONS_DLQ.name,
                            self.name,
                            self.instruments.dead_lettered,
                            seal=dlq_sealer(self.settings),
                        )
                        tps = self._assign(consumer)
                    build = self._open(conn, consumer, tps)
                    delay = RECONNECT_FIRST
                    self._loop(conn, consumer, producer, dead_letters, tps, build, max_batches, stop_at, on_batch)
                    break
                except POSTGRES_LOST as exc:
                    self.instruments.stopped()
                    log.warning(
                        "postgres_lost",
                        projector=self.name,
                        error=type(exc).__name__,
                        detail=str(exc).splitlines()[0][:200] if str(exc) else "",
                        retry_in_s=delay,
                    )
                    self.stop_event.wait(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                finally:
                    if conn is not None:
                        conn.close()
            return self.stats
        finally:
            self.instruments.stopped()
            if consumer is not None:
                consumer.close(autocommit=False)
            if producer is not None:
                producer.close(10)

    def _open(self, conn, consumer: BatchConsumer, tps: list[TopicPartition]) -> str | None:
        """On a (new) connection, after the migrations and the projection's schema: the writer
        lock (a standby waits here), then seek to the tracking rows. Returns the build written."""
        conn.execute("select pg_advisory_lock(hashtext(%s))", (schemas_.lock_key("writer", self.name),))
        self._seek_to_stored(conn, consumer, tps)
        build = self.projection.current_build(conn)
        log.info(
            "projector_started",
            projector=self.name,
            target=self.projection.target,
            build=build,
            topics=self.sources.topics(),
        )
        self.instruments.started = True
        return build

    def _loop(self, conn, consumer, producer, dead_letters, tps, build, max_batches, stop_at, on_batch) -> None:
        kafka_delay = RECONNECT_FIRST
        outbox = self.projection.outbox
        if outbox:  # what a crash (or a lost Kafka) left queued after its commit
            try:
                outbox.publish(conn, producer)
            except RetryableError as exc:  # Kafka or the key store: stays queued, published after the next batch
                log.warning("outbox_unavailable", projector=self.name, error=str(exc)[:300])
        # With shape_ahead the next batch is decoded and shaped while this one is written; never
        # with an outbox (its publisher encodes and seals with codecs of its own after each
        # commit: it is kept off the shaping thread's).
        ahead = (
            ThreadPoolExecutor(1, thread_name_prefix=f"shape-{self.name}")
            if self.shape_ahead and outbox is None
            else None
        )
        pending: tuple[dict, Future] | None = None
        # A rebuild keeps two full batches alive at once (one written, the next shaped): with the
        # collector on, each allocation-heavy step (COPY rows, the identities' spans) sets it off
        # over those hundreds of thousands of objects. It stays paused for the whole run and
        # collects every REBUILD_COLLECT_EVERY batches (what cycles the clients make is freed then).
        paused = collector_paused() if ahead is not None else nullcontext()
        switching = switching_often() if ahead is not None else nullcontext()
        paused.__enter__()
        switching.__enter__()
        try:
            while not self.stop_event.is_set():
                self.instruments.beat(consumer, tps, lambda tp: self.stats.positions.get((tp.topic, tp.partition)))
                if max_batches is not None and self.stats.batches >= max_batches:
                    return
                if stop_at is not None and _reached(self.stats.positions, stop_at):
                    return
                if pending is None:
                    polled = consumer.poll(timeout_ms=500, max_records=self.batch_size)
                    if not polled:
                        continue
                    if self.batch_wait > 0:
                        polled = gather(consumer, polled, self.batch_wait, self.batch_size)
                    pending = (polled, self._shape_soon(ahead, polled))
                polled, job = pending
                pending = None
                try:
                    shaped = job.result()  # a RetryableError of the codec is raised here
                    if ahead is not None and not self._last_batch(polled, max_batches, stop_at):
                        upcoming = consumer.poll(timeout_ms=0, max_records=self.batch_size)
                        if upcoming:
                            pending = (upcoming, self._shape_soon(ahead, upcoming))
                    self._project(conn, producer, dead_letters, polled, shaped, build)
                except SchemaSwapped:
                    pending = _dropped(pending)
                    build = self.projection.current_build(conn)
                    self._seek_to_stored(conn, consumer, tps)
                    log.info(
                        "projector_follows_swapped_schema",
                        projector=self.name,
                        target=self.projection.target,
                        build=build,
                    )
                    continue
                except RetryableError as exc:
                    # A dead letter was not acknowledged in time (KafkaUnavailable), or the codec's
                    # registry or key store did not answer: the batch did not commit (its transaction
                    # rolled back, or it never began), so it is read again from the stored offsets
                    # once they answer. Nothing is skipped, nothing dead-lettered for it.
                    pending = _dropped(pending)
                    log.warning(
                        "dlq_unavailable" if isinstance(exc, KafkaUnavailable) else "codec_unavailable",
                        projector=self.name,
                        error=str(exc)[:300],
                        retry_in_s=kafka_delay,
                    )
                    self._seek_to_stored(conn, consumer, tps)
                    self.stop_event.wait(kafka_delay)
                    kafka_delay = min(kafka_delay * 2, RECONNECT_MAX)
                    continue
                kafka_delay = RECONNECT_FIRST
                if ahead is not None and self.stats.batches % REBUILD_COLLECT_EVERY == 0:
                    gc.collect()
                if on_batch:
                    on_batch(self.stats)
        finally:  # a batch shaped ahead and not written is read again from the tracking rows
            _dropped(pending)
            if ahead is not None:
                ahead.shutdown(wait=True)
            switching.__exit__(None, None, None)
            paused.__exit__(None, None, None)

    def _shape_soon(self, ahead: ThreadPoolExecutor | None, polled) -> Future:
        """``_shape(polled)`` on the shaping thread, or here and now (``ahead`` None)."""
        if ahead is not None:
            return ahead.submit(self._shape, polled)
        done: Future = Future()
        try:
            done.set_result(self._shape(polled))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def _last_batch(self, polled, max_batches: int | None, stop_at) -> bool:
        """Whether writing ``polled`` ends the run (nothing to shape ahead then)."""
        if max_batches is not None and self.stats.batches + 1 >= max_batches:
            return True
        if stop_at is None:
            return False
        after = dict(self.stats.positions)
        for tp, messages in polled.items():
            after[(tp.topic, tp.partition)] = messages[-1].offset + 1
        return _reached(after, stop_at)

    def _shape(self, polled) -> Shaped:
        """Steps 1-2 for a polled batch: decode (the codec's batch hook first) and shape every
        record. Pure but for the codec's lookups; what does not decode or shape is listed with the
        reason, for the caller to dead-letter. A RetryableError of the codec is raised."""
        projection = self.projection
        shaped = Shaped(projection.new_batch())
        shape, batch, singles = projection.shape, shaped.batch, shaped.singles
        with collector_paused():
            for m, decoded, failed in decode_batch(self.codec, polled):
                shaped.count += 1
                try:
                    if failed is not None:
                        raise failed
                    shape(batch, decoded, m)
                except Exception as exc:  # shaping is pure: whatever it raises is this record's fault
                    shaped.refused.append((m, shaping_failure(exc)))
                    continue
                singles.append((m, decoded))
            if shaped.refused:
                # a refused record may have added part of its rows before it raised: the batch is
                # shaped again from the records that shaped (pure: the same rows, no error)
                shaped.batch = batch = projection.new_batch()
                for m, decoded in singles:
                    shape(batch, decoded, m)
        return shaped

    def _single(self, m, decoded) -> Any:
        """One record's rows alone (a failed batch write is retried record by record)."""
        one = self.projection.new_batch()
        self.projection.shape(one, decoded, m)
        return one

    def _project(self, conn, producer, dead_letters: DeadLetters, polled, shaped: Shaped, build: str | None) -> None:
        started = time.perf_counter()
        projection = self.projection
        batch, singles, count = shaped.batch, shaped.singles, shaped.count
        next_offsets: dict[tuple[str, int], int] = {}
        last_at: dict[tuple[str, int], datetime] = {}

        def dead_letter(m, reason: str):
            return dead_letters.send(
                topic=m.topic, partition=m.partition, offset=m.offset, value=m.value, reason=reason
            )

        # what did not decode or shape is dead-lettered
        dead = [dead_letter(m, reason) for m, reason in shaped.refused]
        for tp, messages in polled.items():
            self.instruments.consumed(tp.topic).inc(len(messages))
            key = (tp.topic, tp.partition)
            next_offsets[key] = messages[-1].offset + 1
            last_at[key] = datetime.fromtimestamp(messages[-1].timestamp / 1000).astimezone()
        dead_letters.wait(dead)  # acknowledged before the offsets move past them
        written = len(batch)
        unwritable = []
        # 3. rows, outbox queue and tracking rows: one transaction
        with conn.transaction():
            with conn.cursor() as cur:
                now_build = projection.hold_build(cur)  # (a)
                if now_build != build:
                    raise SchemaSwapped(now_build)
                try:  # (b)
                    with conn.transaction():  # a savepoint: a failed write leaves the batch's transaction usable
                        projection.write(cur, batch)
                except RECORD_WRITE_ERRORS as exc:
                    log.warning(
                        "batch_write_failed",
                        projector=self.name,
                        error=type(exc).__name__,
                        sqlstate=getattr(exc, "sqlstate", None),
                        records=len(singles),
                        action="retrying record by record",
                    )
                    written = 0
                    for m, decoded in singles:
                        one = self._single(m, decoded)
                        try:
                            with conn.transaction():
                                projection.write(cur, one)
                            written += len(one)
                        except RECORD_WRITE_ERRORS as exc:
                            unwritable.append(dead_letter(m, write_failure(exc, projection.target)))
                    dead_letters.wait(unwritable)  # acknowledged before the offsets below commit
                if projection.outbox:  # (c)
                    projection.outbox.queue(cur, batch)
                write_offsets(cur, self.name, next_offsets, last_at)  # (d)
        # 4. after the commit: the outbox, from committed rows only
        if projection.outbox:
            projection.outbox.publish(conn, producer)
        dead += unwritable
        self.stats.positions.update(next_offsets)
        self.stats.events += count
        self.stats.rows += written
        self.stats.dead_letters += len(dead)
        self.stats.batches += 1
        self.stats.skipped_as_of += batch.skipped_as_of
        self.instruments.batch_done(time.perf_counter() - started, len(dead))
        log.info(
            "batch_projected",
            projector=self.name,
            events=count,
            rows=written,
            dead_letters=len(dead),
            offsets={f"{t}:{p}": o for (t, p), o in next_offsets.items()},
        )
