"""The projector framework: event topics → a projection schema, effectively once.

Per batch, in this order:
  1. poll up to ``batch_size`` records from every partition of the source topics;
  2. decode and shape them (``projectors.rows``, which also makes text storable: NUL and unpaired
     surrogates become U+FFFD); what does not decode or shape is produced to projections.dlq.v1
     and acknowledged before step 3, and the projector goes on;
  3. in ONE PostgreSQL transaction: check that the schema it writes is still the build it
     started on (a replay may have swapped a new one in), COPY the rows into staging tables and
     upsert them from there (no round trip per row), re-point merged customers, recompute the
     conversations the batch touched, and store the next offset of every partition it read.
     If PostgreSQL refuses the batch's rows (RECORD_WRITE_ERRORS), the same transaction retries
     it record by record, each in a savepoint; a record refused alone goes to the DLQ with the
     reason (acknowledged before the commit) and the rest, with the offsets, commit;
  4. when it publishes customer profiles (``profiles_topic``; projectors/profiles.py): the same
     transaction queues the customers the batch touched, and after the commit their profiles are
     produced from the committed state and unqueued once Kafka acknowledged them.
A lost connection is retried with backoff until PostgreSQL is back; the projector then resumes
from its stored offsets.
Offsets come from PostgreSQL, never from a consumer group: the projector assigns itself every
partition and seeks to the stored offsets, so a crash anywhere replays nothing twice into the
tables. One instance per projector writes at a time (a session advisory lock); a second one
waits as a standby.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from kafka import KafkaConsumer, TopicPartition

from projectors import ddl
from projectors.profiles import Publisher
from projectors.migrate import migrate
from projectors.rows import (CONTACT_COLUMNS, CONVERSATION_COLUMNS, IDENTITY_COLUMNS, IDENTITY_EVENT_COLUMNS,
                             Batch, roots)
from schemas.codec import Codec
from schemas.keystore import make_reader_codec
from threadline.dlq import dlq_headers
from threadline import metrics
from threadline.catalog import CONTACTS_RESOLVED, CONVERSATIONS, IDENTITIES, PROJECTIONS_DLQ
from threadline.errors import ConfigError, DecodeError, KafkaUnavailable
from threadline.kafka import BoundedProducer, header_list
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.projector")

DEFAULT_BATCH = 2000
ASSIGN_TIMEOUT = 60.0
LAG_INTERVAL = 1.0  # seconds between updates of threadline_consumer_lag
RECONNECT_FIRST, RECONNECT_MAX = 0.5, 10.0  # backoff (seconds) while PostgreSQL does not answer

# A write that fails with one of these is about the rows written, not the database: the batch is
# retried record by record, and a record that fails alone goes to the DLQ. Data exceptions (22xxx:
# NUL in text, a value out of range, bad JSON), integrity violations (23xxx), limits (54xxx: an
# index row too large), and what psycopg raises adapting a Python value (a string it cannot encode).
RECORD_WRITE_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded,
                       UnicodeError, ValueError, TypeError, OverflowError)
# The connection is gone (PostgreSQL restarted, the network failed): reconnect and resume.
POSTGRES_LOST = (psycopg.OperationalError, psycopg.InterfaceError)


def write_failure(exc: BaseException, schema: str) -> str:
    """The DLQ reason of a record PostgreSQL would not take (it may quote the value: DLQ only, never logs)."""
    state = getattr(exc, "sqlstate", None)
    return f"not writable to {schema}: {type(exc).__name__}{f' {state}' if state else ''}: {exc}"


@dataclass(frozen=True)
class Sources:
    """The topics a projection reads; tests and replays pass their own."""

    contacts: str | None = CONTACTS_RESOLVED.name
    conversations: str | None = CONVERSATIONS.name
    identities: str | None = IDENTITIES.name

    def topics(self) -> list[str]:
        return [t for t in (self.contacts, self.conversations, self.identities) if t]


def live_schema(settings: Settings, projection: str) -> str:
    return ddl.check_ident(f"{settings.projection_prefix}{projection}")


def _lock_key(kind: str, name: str) -> str:
    return f"threadline:{kind}:{name}"


def connect(settings: Settings, application_name: str = "threadline-projector") -> psycopg.Connection:
    return psycopg.connect(settings.effective_pg_dsn, autocommit=True, application_name=application_name[:63])


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone() is not None


def create_schema(conn: psycopg.Connection, projection: str, schema: str, build_id: str,
                  as_of: datetime | None = None) -> None:
    with conn.transaction():
        conn.execute(ddl.schema_sql(projection, schema))
        conn.execute(f"insert into {schema}.meta (projection, build_id, as_of) values (%s, %s, %s)",
                     (projection, build_id, as_of))


def ensure_live(conn: psycopg.Connection, projection: str, schema: str) -> None:
    """Create the live schema on first use (serialized: two projectors may start at once)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (_lock_key("swap", schema),))
        if not schema_exists(conn, schema):
            conn.execute(ddl.schema_sql(projection, schema))
            conn.execute(f"insert into {schema}.meta (projection, build_id) values (%s, 'initial')", (projection,))
        else:
            upgrade_views(conn, projection, schema)


def upgrade_views(conn: psycopg.Connection, projection: str, schema: str) -> bool:
    """Re-create the views of a schema made by an older ``ddl`` (its tables were altered by the
    migrations); ``clock`` stays. Returns whether it did. Call inside a transaction."""
    (version,) = conn.execute(f"select ddl_version from {schema}.meta").fetchone()
    if version >= ddl.DDL_VERSION:
        return False
    views = [v for (v,) in conn.execute("select viewname from pg_views where schemaname = %s and viewname <> 'clock'",
                                        (schema,))]
    if views:
        conn.execute("drop view if exists " + ", ".join(f"{schema}.{ddl.check_ident(v)}" for v in views) + " cascade")
    conn.execute(ddl.views_sql(projection, schema))
    conn.execute(f"update {schema}.meta set ddl_version = %s", (ddl.DDL_VERSION,))
    log.info("projection_views_upgraded", schema=schema, ddl_version=ddl.DDL_VERSION, views=len(views))
    return True


def stored_offsets(conn: psycopg.Connection, projector: str) -> dict[tuple[str, int], int]:
    rows = conn.execute("select topic, partition, next_offset from projection_offsets where projector = %s",
                        (projector,)).fetchall()
    return {(t, p): o for t, p, o in rows}


def write_offsets(cur, projector: str, offsets: dict[tuple[str, int], int],
                  last_record_at: dict[tuple[str, int], datetime] | None = None) -> None:
    if not offsets:
        return
    keys = sorted(offsets)
    cur.execute(
        "insert into projection_offsets (projector, topic, partition, next_offset, last_record_at)"
        " select %s, t, p, o, ts from unnest(%s::text[], %s::int[], %s::bigint[], %s::timestamptz[]) as u(t, p, o, ts)"
        " on conflict (projector, topic, partition) do update set next_offset = excluded.next_offset,"
        " last_record_at = coalesce(excluded.last_record_at, projection_offsets.last_record_at), updated_at = now()",
        (projector, [k[0] for k in keys], [k[1] for k in keys], [offsets[k] for k in keys],
         [(last_record_at or {}).get(k) for k in keys]))


class Store:
    """Writes a shaped Batch into one projection schema, inside the caller's transaction."""

    def __init__(self, schema: str):
        self.s = ddl.check_ident(schema)

    def _copy(self, cur, table: str, columns: tuple[str, ...], rows: list[tuple], *, like: str | None = None) -> None:
        stage = f"_stage_{table}"
        cols = ", ".join(columns)
        if like:
            cur.execute(f"create temp table if not exists {stage} (like {self.s}.{like}) on commit delete rows")
        with cur.copy(f"copy {stage} ({cols}) from stdin") as cp:
            for row in rows:
                cp.write_row(row)

    def _facts(self, cur, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Events are facts: written once, a duplicate delivery changes nothing."""
        if not rows:
            return
        self._copy(cur, table, columns, rows, like=table)
        cols = ", ".join(columns)
        cur.execute(f"insert into {self.s}.{table} ({cols}) select distinct on (event_id) {cols} from _stage_{table}"
                    f" order by event_id, source_partition, source_offset on conflict (event_id) do nothing")

    def write(self, cur, batch: Batch) -> None:
        s = self.s
        self._facts(cur, "contacts", CONTACT_COLUMNS, batch.contacts)
        self._facts(cur, "conversation_events", CONVERSATION_COLUMNS, batch.conversations)
        self._facts(cur, "identity_events", IDENTITY_EVENT_COLUMNS, batch.identity_events)
        if batch.identities:
            self._copy(cur, "customer_identities", IDENTITY_COLUMNS, batch.identities, like="customer_identities")
            cur.execute(
                f"insert into {s}.customer_identities select origin_customer_id, kind, platform, value,"
                f" min(first_seen_at), max(last_seen_at) from _stage_customer_identities"
                f" group by kind, platform, value, origin_customer_id"
                f" on conflict (kind, platform, value, origin_customer_id) do update set"
                f" first_seen_at = least({s}.customer_identities.first_seen_at, excluded.first_seen_at),"
                f" last_seen_at = greatest({s}.customer_identities.last_seen_at, excluded.last_seen_at)")
        if batch.customers:
            cur.execute("create temp table if not exists _stage_customers"
                        " (origin_customer_id text, first_seen_at timestamptz) on commit delete rows")
            self._copy(cur, "customers", ("origin_customer_id", "first_seen_at"), batch.customers)
            cur.execute(
                f"insert into {s}.customers select st.origin_customer_id,"
                f" coalesce((select a.root_id from {s}.customer_alias a where a.customer_id = st.origin_customer_id"
                f" order by a.survivor_id limit 1), st.origin_customer_id), min(st.first_seen_at)"
                f" from _stage_customers st group by st.origin_customer_id"
                f" on conflict (origin_customer_id) do update set"
                f" first_seen_at = least({s}.customers.first_seen_at, excluded.first_seen_at)")
        if batch.alias_ops:
            self._repoint(cur, batch)
        if batch.conversations:
            ids = sorted({r[2] for r in batch.conversations})
            for sql in ddl.RECOMPUTE_MESSAGES:
                cur.execute(sql.format(s=s), {"ids": ids})
            cur.execute(ddl.RECOMPUTE_CONVERSATIONS.format(s=s), {"ids": ids})

    def _repoint(self, cur, batch: Batch) -> None:
        """Apply merges and unmerges in log order, then point every affected id at its root."""
        s = self.s
        before = {(a, b) for a, b in cur.execute(f"select customer_id, survivor_id from {s}.customer_alias")}
        for op in batch.alias_ops:
            if op.action == "add":
                cur.execute(f"insert into {s}.customer_alias values (%s, %s, %s, %s, %s) on conflict do nothing",
                            (op.absorbed, op.survivor, op.survivor, op.event_id, op.occurred_at))
            else:
                cur.execute(f"delete from {s}.customer_alias where customer_id = %s and survivor_id = %s",
                            (op.absorbed, op.survivor))
        after = {(a, b) for a, b in cur.execute(f"select customer_id, survivor_id from {s}.customer_alias")}
        root = roots(after)
        affected = sorted({n for e in before | after for n in e})
        targets = [root.get(n, n) for n in affected]
        cur.execute(f"update {s}.customer_alias a set root_id = u.r from unnest(%s::text[], %s::text[]) as u(n, r)"
                    f" where a.customer_id = u.n and a.root_id is distinct from u.r", (affected, targets))
        cur.execute(f"update {s}.customers c set customer_id = u.r from unnest(%s::text[], %s::text[]) as u(n, r)"
                    f" where c.origin_customer_id = u.n and c.customer_id is distinct from u.r", (affected, targets))
        log.info("customers_repointed", schema=s, ids=len(affected),
                 merges=sum(op.action == "add" for op in batch.alias_ops),
                 unmerges=sum(op.action == "remove" for op in batch.alias_ops))


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


class Instruments:
    """One projector's metrics, and what /livez and /readyz of the projector process read:
    ``started`` (assigned and seeked), ``heartbeat`` (the loop's last turn)."""

    def __init__(self, component: str, dlq_topic: str = PROJECTIONS_DLQ.name):
        self.component = component
        self.consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, component)
        self.dead_lettered = metrics.Labelled(metrics.DLQ, component)
        self._produced_dlq = metrics.EVENTS_PRODUCED.labels(component, dlq_topic)
        self._batch_seconds = metrics.PROCESSING_SECONDS.labels(component, "batch")
        self.lag = metrics.LagGauge(component)
        self.started = False
        self.heartbeat = time.monotonic()
        self._lag_at = 0.0

    def beat(self, consumer: KafkaConsumer, tps, position: Callable) -> None:
        """A turn of the loop: the heartbeat, and at most every LAG_INTERVAL the lag of ``tps``
        (the consumer's last seen end offsets minus ``position(tp)``)."""
        self.heartbeat = now = time.monotonic()
        if now - self._lag_at >= LAG_INTERVAL:
            self._lag_at = now
            self.lag.update_from(tps, consumer.highwater, position)

    def batch_done(self, seconds: float, dead_letters: int) -> None:
        self._batch_seconds.observe(seconds)
        if dead_letters:
            self._produced_dlq.inc(dead_letters)

    def stopped(self) -> None:
        self.started = False
        self.lag.clear()


class Projector:
    """Projects ``sources`` into ``schema`` (default: the live schema of ``projection``),
    storing offsets under ``name`` (default: the schema name)."""

    def __init__(self, settings: Settings, projection: str, *, sources: Sources = Sources(),
                 schema: str | None = None, name: str | None = None, codec: Codec | None = None,
                 as_of: datetime | None = None, batch_size: int = DEFAULT_BATCH,
                 create: bool = True, profiles_topic: str | None = None):
        if projection not in ddl.PROJECTIONS:
            raise ConfigError(f"unknown projection {projection!r}: one of {', '.join(ddl.PROJECTIONS)}")
        self.settings = settings
        self.projection = projection
        self.sources = sources
        self.schema = ddl.check_ident(schema or live_schema(settings, projection))
        self.name = name or self.schema
        self.codec = make_reader_codec(settings, codec)  # opens sealed records (docs/privacy.md)
        self.as_of = as_of
        self.batch_size = batch_size
        self.create = create
        self.store = Store(self.schema)
        # customer profiles of what this projector writes, to ``profiles_topic`` (None: none)
        self.profiles = Publisher(self.schema, self.name, self.codec, profiles_topic) if profiles_topic else None
        self.stop_event = threading.Event()
        self.stats = RunStats()
        self.instruments = Instruments(f"projector:{self.name}")

    # -- set-up -------------------------------------------------------------------------------
    def _assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
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

    def _seek_to_stored(self, conn, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        stored = stored_offsets(conn, self.name)
        for tp in tps:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)
        self.stats.positions = {(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), 0) for tp in tps}

    def _build_id(self, conn) -> str:
        return conn.execute(f"select build_id from {self.schema}.meta").fetchone()[0]

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, max_batches: int | None = None, stop_at: dict[tuple[str, int], int] | None = None,
            on_batch: Callable[[RunStats], None] | None = None) -> RunStats:
        """Project until stopped, ``max_batches`` batches, or every partition reached ``stop_at``.

        A lost PostgreSQL connection (a restart, a network cut) is not the end: the projector
        reconnects with backoff until PostgreSQL answers again, re-takes its writer lock and
        resumes from the offsets stored there (the batch it was writing never committed)."""
        consumer = dlq = None
        delay = RECONNECT_FIRST
        try:
            consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                                     max_poll_records=self.batch_size, client_id=f"projector-{self.name}",
                                     **self.settings.kafka_client_config())
            # every DLQ send and wait within THREADLINE_PRODUCE_DEADLINE_SECONDS (KafkaUnavailable)
            dlq = BoundedProducer.from_settings(self.settings, client_id=f"projector-{self.name}")
            tps = self._assign(consumer)
            while not self.stop_event.is_set():
                conn = None
                try:
                    conn = connect(self.settings, f"projector:{self.name}")
                    build = self._open(conn, consumer, tps)
                    delay = RECONNECT_FIRST
                    self._loop(conn, consumer, dlq, tps, build, max_batches, stop_at, on_batch)
                    break
                except POSTGRES_LOST as exc:
                    self.instruments.stopped()
                    log.warning("postgres_lost", projector=self.name, error=type(exc).__name__,
                                detail=str(exc).splitlines()[0][:200] if str(exc) else "", retry_in_s=delay)
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
            if dlq is not None:
                dlq.close(10)

    def _open(self, conn, consumer: KafkaConsumer, tps: list[TopicPartition]) -> str:
        """Set up a (new) connection: migrations, the live schema, the writer lock (a standby
        waits here), then seek to the stored offsets. Returns the build being written."""
        migrate(conn)
        if self.create:
            ensure_live(conn, self.projection, self.schema)
        conn.execute("select pg_advisory_lock(hashtext(%s))", (_lock_key("writer", self.name),))
        self._seek_to_stored(conn, consumer, tps)
        build = self._build_id(conn)
        log.info("projector_started", projector=self.name, schema=self.schema, build=build,
                 topics=self.sources.topics(), as_of=self.as_of.isoformat() if self.as_of else None)
        self.instruments.started = True
        return build

    def _loop(self, conn, consumer, dlq, tps, build: str, max_batches, stop_at, on_batch) -> None:
        kafka_delay = RECONNECT_FIRST
        if self.profiles:  # what a crash (or a lost Kafka) left queued after its commit
            try:
                self.profiles.publish(conn, dlq)
            except KafkaUnavailable as exc:  # stays queued: published after the next committed batch
                log.warning("profiles_unavailable", projector=self.name, error=str(exc)[:300])
        while not self.stop_event.is_set():
            self.instruments.beat(consumer, tps, lambda tp: self.stats.positions.get((tp.topic, tp.partition)))
            if max_batches is not None and self.stats.batches >= max_batches:
                return
            if stop_at is not None and all(self.stats.positions.get(k, 0) >= v for k, v in stop_at.items()):
                return
            polled = consumer.poll(timeout_ms=500, max_records=self.batch_size)
            if not polled:
                continue
            try:
                self._project(conn, dlq, polled, build)
            except SchemaSwapped:
                build = self._build_id(conn)
                self._seek_to_stored(conn, consumer, tps)
                log.info("projector_follows_swapped_schema", projector=self.name, schema=self.schema, build=build)
                continue
            except KafkaUnavailable as exc:
                # A dead letter was not acknowledged in time: the batch did not commit (its
                # transaction rolled back, or it never began), so it is read again from the
                # stored offsets once Kafka takes writes. Nothing is skipped.
                log.warning("dlq_unavailable", projector=self.name, error=str(exc)[:300], retry_in_s=kafka_delay)
                self._seek_to_stored(conn, consumer, tps)
                self.stop_event.wait(kafka_delay)
                kafka_delay = min(kafka_delay * 2, RECONNECT_MAX)
                continue
            kafka_delay = RECONNECT_FIRST
            if on_batch:
                on_batch(self.stats)

    def _dead_letter(self, dlq, m, reason: str):
        """Produce ``m`` as it was read to the projections DLQ; the caller waits for the ack."""
        self.instruments.dead_lettered(m.topic).inc()
        log.warning("record_to_dlq", projector=self.name, topic=m.topic, partition=m.partition,
                    offset=m.offset, reason=reason.split(":")[0][:200])
        return dlq.send(PROJECTIONS_DLQ.name, key=m.topic.encode(), value=m.value,
                        headers=header_list(dlq_headers(reason=reason, topic=m.topic, partition=m.partition,
                                                        offset=m.offset, component=self.name)))

    def _project(self, conn, dlq, polled, build: str) -> None:
        started = time.perf_counter()
        batch = Batch()
        singles: list[tuple] = []  # (message, its rows): to find the record a failed write was about
        next_offsets: dict[tuple[str, int], int] = {}
        last_at: dict[tuple[str, int], datetime] = {}
        dead = []
        count = 0
        with collector_paused():
            for tp, messages in polled.items():
                for m in messages:
                    count += 1
                    one = Batch()
                    try:
                        decoded = self.codec.decode(m.value)
                        one.add(decoded.schema_fullname, decoded.record, m.partition, m.offset, self.as_of)
                    except Exception as exc:  # shaping is pure: whatever it raises is this record's fault
                        reason = exc.reason if isinstance(exc, DecodeError) else f"record does not fit: {exc!r}"
                        dead.append(self._dead_letter(dlq, m, reason))
                        continue
                    batch.extend(one)
                    singles.append((m, one))
                self.instruments.consumed(tp.topic).inc(len(messages))
                key = (tp.topic, tp.partition)
                next_offsets[key] = messages[-1].offset + 1
                last_at[key] = datetime.fromtimestamp(messages[-1].timestamp / 1000).astimezone()
        dlq.wait(dead, "dead letters")  # acknowledged before the offsets move past them
        written = len(batch)
        unwritable = []
        with conn.transaction():
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_xact_lock_shared(hashtext(%s))", (_lock_key("swap", self.schema),))
                now_build = cur.execute(f"select build_id from {self.schema}.meta").fetchone()[0]
                if now_build != build:
                    raise SchemaSwapped(now_build)
                try:
                    with conn.transaction():  # a savepoint: a failed write leaves the batch's transaction usable
                        self.store.write(cur, batch)
                except RECORD_WRITE_ERRORS as exc:
                    log.warning("batch_write_failed", projector=self.name, error=type(exc).__name__,
                                sqlstate=getattr(exc, "sqlstate", None), records=len(singles),
                                action="retrying record by record")
                    written = 0
                    for m, one in singles:
                        try:
                            with conn.transaction():
                                self.store.write(cur, one)
                            written += len(one)
                        except RECORD_WRITE_ERRORS as exc:
                            unwritable.append(self._dead_letter(dlq, m, write_failure(exc, self.schema)))
                    dlq.wait(unwritable, "dead letters")  # acknowledged before the offsets below commit
                if self.profiles:
                    self.profiles.queue(cur, batch)
                write_offsets(cur, self.name, next_offsets, last_at)
        if self.profiles:  # after the commit: profiles of committed rows only
            self.profiles.publish(conn, dlq)
        dead += unwritable
        self.stats.positions.update(next_offsets)
        self.stats.events += count
        self.stats.rows += written
        self.stats.dead_letters += len(dead)
        self.stats.batches += 1
        self.stats.skipped_as_of += batch.skipped_as_of
        self.instruments.batch_done(time.perf_counter() - started, len(dead))
        log.info("batch_projected", projector=self.name, events=count, rows=written, dead_letters=len(dead),
                 offsets={f"{t}:{p}": o for (t, p), o in next_offsets.items()})
        for r in batch.contacts:  # per event at debug only: at info the batch line above
            log.debug("contact_projected", event_id=r[0], customer_id=r[1], partition=r[-2], offset=r[-1])
