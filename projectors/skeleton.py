"""The foundation's projector: contacts.resolved.v1 → skeleton.contacts, effectively once.

Per batch, in this order:
  1. poll a batch of records;
  2. in ONE Postgres transaction: upsert the decoded rows (duplicates collapse on event_id),
     then upsert the next offset of every partition the batch touched;
  3. commit.
Kafka's consumer-group offsets are never trusted: on assignment the consumer seeks to the
offsets stored in Postgres, so a crash between 2 and 3 replays nothing twice into the tables.
Records that do not decode go to projections.dlq.v1 (produced and acknowledged before the
transaction that moves the offset past them). Text is made storable (NUL and unpaired surrogates
become U+FFFD); a row PostgreSQL still refuses is found by retrying the batch row by row in the
same transaction and goes to the DLQ with the reason, and the partition moves on. A lost
PostgreSQL connection is retried with backoff; the projector then re-seeks to its stored offsets.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from projectors.framework import (POSTGRES_LOST, RECONNECT_FIRST, RECONNECT_MAX, RECORD_WRITE_ERRORS, Instruments,
                                  write_failure)
from projectors.migrate import migrate
from projectors.rows import storable
from schemas.codec import Codec
from schemas.keystore import make_reader_codec
from threadline.dlq import dlq_headers
from threadline.catalog import CONTACTS_RESOLVED, PROJECTIONS_DLQ
from threadline.errors import DecodeError, KafkaUnavailable
from threadline.kafka import BoundedProducer, header_list
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.projector")

NAME = "skeleton.contacts"


@dataclass(frozen=True)
class Row:
    event_id: str
    customer_id: str
    connector: str
    channel: str
    direction: str
    occurred_at: datetime
    recorded_at: datetime
    text: str | None
    record: str
    topic: str
    partition: int
    offset: int


def _json_default(v):
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def to_row(record: dict, topic: str, partition: int, offset: int) -> Row:
    if not record.get("customer_id"):
        raise DecodeError("contact on contacts.resolved.v1 without customer_id")
    record = storable(record)  # NUL and unpaired surrogates: U+FFFD, the rest as it is
    return Row(record["event_id"], record["customer_id"], record["connector"], record["channel"],
               record["direction"], record["occurred_at"], record["recorded_at"], record.get("text"),
               json.dumps(record, default=_json_default), topic, partition, offset)


def stored_offsets(conn: psycopg.Connection, projector: str, topic: str) -> dict[int, int]:
    rows = conn.execute("select partition, next_offset from projection_offsets where projector=%s and topic=%s",
                        (projector, topic)).fetchall()
    return {p: o for p, o in rows}


def _insert(cur, rows: list[Row]) -> None:
    cur.executemany(
        "insert into skeleton.contacts (event_id, customer_id, connector, channel, direction, occurred_at,"
        " recorded_at, text, record, source_topic, source_partition, source_offset)"
        " values (%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s) on conflict (event_id) do nothing",
        [(r.event_id, r.customer_id, r.connector, r.channel, r.direction, r.occurred_at, r.recorded_at,
          r.text, r.record, r.topic, r.partition, r.offset) for r in rows])


def write_batch(conn: psycopg.Connection, projector: str, rows: list[Row], next_offsets: dict[tuple[str, int], int],
                dead_letter: Callable[[Row, BaseException], None] | None = None) -> int:
    """Rows and offsets in one transaction: both land or neither does. If PostgreSQL refuses the
    rows, they are retried one by one (each in a savepoint) and ``dead_letter`` is called, before
    the commit, for each row refused alone. Returns how many rows were written."""
    written = len(rows)
    with conn.transaction():
        with conn.cursor() as cur:
            if rows:
                try:
                    with conn.transaction():
                        _insert(cur, rows)
                except RECORD_WRITE_ERRORS as exc:
                    if dead_letter is None:
                        raise
                    log.warning("batch_write_failed", projector=projector, error=type(exc).__name__,
                                sqlstate=getattr(exc, "sqlstate", None), records=len(rows),
                                action="retrying record by record")
                    written = 0
                    for r in rows:
                        try:
                            with conn.transaction():
                                _insert(cur, [r])
                            written += 1
                        except RECORD_WRITE_ERRORS as one:
                            dead_letter(r, one)
            cur.executemany(
                "insert into projection_offsets (projector, topic, partition, next_offset) values (%s,%s,%s,%s)"
                " on conflict (projector, topic, partition) do update set next_offset = excluded.next_offset,"
                " updated_at = now()",
                [(projector, t, p, o) for (t, p), o in next_offsets.items()])
    return written


class _SeekToStored(ConsumerRebalanceListener):
    def __init__(self, projector: Projector):
        self.projector = projector

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        try:
            self.projector.seek_to_stored(assigned)
        except POSTGRES_LOST:
            self.projector.needs_seek = True  # the loop reconnects, then seeks


class Projector:
    def __init__(self, settings: Settings, codec: Codec | None = None, projector: str = NAME,
                 source_topic: str = CONTACTS_RESOLVED.name):
        self.settings = settings
        self.projector = projector
        self.source_topic = source_topic
        self.codec = make_reader_codec(settings, codec)  # opens sealed records (docs/privacy.md)
        self.stop_event = threading.Event()
        self.instruments = Instruments(f"projector:{projector}")
        self.conn: psycopg.Connection | None = None
        self.consumer: KafkaConsumer | None = None
        self.needs_seek = False

    def seek_to_stored(self, partitions) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        for tp in partitions:
            stored = by_topic.setdefault(tp.topic, stored_offsets(self.conn, self.projector, tp.topic))
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)

    def _connect(self) -> None:
        """(Re)connect to PostgreSQL with backoff until it answers or the projector is stopped."""
        delay = RECONNECT_FIRST
        while not self.stop_event.is_set():
            try:
                self.conn = psycopg.connect(self.settings.effective_pg_dsn, autocommit=True,
                                            application_name=f"projector:{self.projector}"[:63])
                migrate(self.conn)
                return
            except POSTGRES_LOST as exc:
                self._lost(exc, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    def _lost(self, exc: BaseException, delay: float) -> None:
        self.instruments.started = False
        log.warning("postgres_lost", projector=self.projector, error=type(exc).__name__,
                    detail=str(exc).splitlines()[0][:200] if str(exc) else "", retry_in_s=delay)
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, max_batches: int | None = None) -> None:
        self._connect()
        if self.conn is None:  # stopped before PostgreSQL answered
            return
        self.consumer = consumer = KafkaConsumer(
            group_id=f"threadline-projector-{self.projector}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=1000, **self.settings.kafka_client_config())
        consumer.subscribe([self.source_topic], listener=_SeekToStored(self))
        dlq = BoundedProducer.from_settings(self.settings)  # every wait within THREADLINE_PRODUCE_DEADLINE_SECONDS
        batches = 0
        self.instruments.started = True
        try:
            while not self.stop_event.is_set() and (max_batches is None or batches < max_batches):
                self.instruments.beat(consumer, consumer.assignment(), lambda tp: consumer.position(tp, timeout_ms=0))
                try:
                    if self.conn is None:
                        self._connect()
                        self.needs_seek = True
                        continue
                    if self.needs_seek:  # the batch that failed never committed: read it again
                        self.seek_to_stored(consumer.assignment())
                        self.needs_seek = False
                        self.instruments.started = True
                    polled = consumer.poll(timeout_ms=500)
                    if not polled:
                        continue
                    self._project(self.conn, dlq, polled)
                except POSTGRES_LOST as exc:
                    self._lost(exc, RECONNECT_FIRST)
                    self.stop_event.wait(RECONNECT_FIRST)
                    continue
                except KafkaUnavailable as exc:
                    # A dead letter not acknowledged in time: the batch did not commit; read it
                    # again from the stored offsets once Kafka takes writes. Nothing is skipped.
                    log.warning("dlq_unavailable", projector=self.projector, error=str(exc)[:300],
                                retry_in_s=RECONNECT_FIRST)
                    self.needs_seek = True
                    self.stop_event.wait(RECONNECT_FIRST)
                    continue
                batches += 1
        finally:
            self.instruments.stopped()
            consumer.close(autocommit=False)
            dlq.close(10)
            if self.conn is not None:
                self.conn.close()

    def _send_dead(self, dlq, topic: str, partition: int, offset: int, value: bytes, reason: str):
        self.instruments.dead_lettered(topic).inc()
        log.warning("record_to_dlq", topic=topic, partition=partition, offset=offset, reason=reason.split(":")[0][:200])
        return dlq.send(PROJECTIONS_DLQ.name, key=topic.encode(), value=value, headers=header_list(
            dlq_headers(reason=reason, topic=topic, partition=partition, offset=offset, component=self.projector)))

    def _project(self, conn, dlq, polled) -> None:
        started = time.perf_counter()
        rows: list[Row] = []
        raw: dict[tuple[int, int], bytes] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        dead = []
        for tp, messages in polled.items():
            for m in messages:
                try:
                    rows.append(to_row(self.codec.decode(m.value).record, m.topic, m.partition, m.offset))
                    raw[(m.partition, m.offset)] = m.value
                except Exception as exc:  # shaping is pure: whatever it raises is this record's fault
                    reason = exc.reason if isinstance(exc, DecodeError) else f"record does not fit: {exc!r}"
                    dead.append(self._send_dead(dlq, m.topic, m.partition, m.offset, m.value, reason))
            self.instruments.consumed(tp.topic).inc(len(messages))
            next_offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        # Commit order: dead letters acknowledged first, then rows + offsets in one transaction.
        dlq.wait(dead, "dead letters")
        refused = []

        def dead_letter(r: Row, exc: BaseException) -> None:  # inside the transaction, before its commit
            refused.append(r)
            dlq.wait([self._send_dead(dlq, r.topic, r.partition, r.offset, raw[(r.partition, r.offset)],
                                      write_failure(exc, "skeleton.contacts"))], "dead letters")

        write_batch(conn, self.projector, rows, next_offsets, dead_letter)
        self.instruments.batch_done(time.perf_counter() - started, len(dead) + len(refused))
        for r in rows:
            if r not in refused:
                log.debug("contact_projected", event_id=r.event_id, customer_id=r.customer_id,
                          partition=r.partition, offset=r.offset)
        log.info("batch_projected", projector=self.projector, events=len(rows) + len(dead),
                 rows=len(rows) - len(refused), dead_letters=len(dead) + len(refused))


def run_forever(settings: Settings) -> None:
    projector = Projector(settings)
    signal.signal(signal.SIGTERM, lambda *_: projector.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: projector.stop_event.set())
    projector.run()
