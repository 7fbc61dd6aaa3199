"""The foundation's projector: contacts.resolved.v1 → skeleton.contacts, effectively once.

Per batch, in this order:
  1. poll a batch of records;
  2. in ONE Postgres transaction: upsert the decoded rows (duplicates collapse on event_id),
     then upsert the next offset of every partition the batch touched;
  3. commit.
Kafka's consumer-group offsets are never trusted: on assignment the consumer seeks to the
offsets stored in Postgres, so a crash between 2 and 3 replays nothing twice into the tables.
Records that do not decode go to projections.dlq.v1 (produced and acknowledged before the
transaction that moves the offset past them).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from projectors.migrate import migrate
from schemas.codec import Codec, make_codec
from streams.dlq import dlq_headers
from threadline.catalog import CONTACTS_RESOLVED, PROJECTIONS_DLQ
from threadline.errors import DecodeError
from threadline.kafka import header_list, make_producer
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
    return Row(record["event_id"], record["customer_id"], record["connector"], record["channel"],
               record["direction"], record["occurred_at"], record["recorded_at"], record.get("text"),
               json.dumps(record, default=_json_default), topic, partition, offset)


def stored_offsets(conn: psycopg.Connection, projector: str, topic: str) -> dict[int, int]:
    rows = conn.execute("select partition, next_offset from projection_offsets where projector=%s and topic=%s",
                        (projector, topic)).fetchall()
    return {p: o for p, o in rows}


def write_batch(conn: psycopg.Connection, projector: str, rows: list[Row], next_offsets: dict[tuple[str, int], int]) -> None:
    """Rows and offsets in one transaction: both land or neither does."""
    with conn.transaction():
        with conn.cursor() as cur:
            if rows:
                cur.executemany(
                    "insert into skeleton.contacts (event_id, customer_id, connector, channel, direction, occurred_at,"
                    " recorded_at, text, record, source_topic, source_partition, source_offset)"
                    " values (%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s) on conflict (event_id) do nothing",
                    [(r.event_id, r.customer_id, r.connector, r.channel, r.direction, r.occurred_at, r.recorded_at,
                      r.text, r.record, r.topic, r.partition, r.offset) for r in rows])
            cur.executemany(
                "insert into projection_offsets (projector, topic, partition, next_offset) values (%s,%s,%s,%s)"
                " on conflict (projector, topic, partition) do update set next_offset = excluded.next_offset,"
                " updated_at = now()",
                [(projector, t, p, o) for (t, p), o in next_offsets.items()])


class _SeekToStored(ConsumerRebalanceListener):
    def __init__(self, consumer: KafkaConsumer, conn: psycopg.Connection, projector: str):
        self.consumer, self.conn, self.projector = consumer, conn, projector

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        by_topic: dict[str, dict[int, int]] = {}
        for tp in assigned:
            stored = by_topic.setdefault(tp.topic, stored_offsets(self.conn, self.projector, tp.topic))
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)


class Projector:
    def __init__(self, settings: Settings, codec: Codec | None = None, projector: str = NAME,
                 source_topic: str = CONTACTS_RESOLVED.name):
        self.settings = settings
        self.projector = projector
        self.source_topic = source_topic
        self.codec = codec or make_codec(settings)
        self.stop_event = threading.Event()
        from projectors.framework import Instruments

        self.instruments = Instruments(f"projector:{projector}")

    def run(self, max_batches: int | None = None) -> None:
        conn = psycopg.connect(self.settings.effective_pg_dsn, autocommit=True)
        migrate(conn)
        consumer = KafkaConsumer(group_id=f"threadline-projector-{self.projector}", enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_poll_records=1000,
                                 **self.settings.kafka_client_config())
        consumer.subscribe([self.source_topic], listener=_SeekToStored(consumer, conn, self.projector))
        dlq = make_producer(self.settings)
        batches = 0
        self.instruments.started = True
        try:
            while not self.stop_event.is_set() and (max_batches is None or batches < max_batches):
                self.instruments.beat(consumer, consumer.assignment(), lambda tp: consumer.position(tp, timeout_ms=0))
                polled = consumer.poll(timeout_ms=500)
                if not polled:
                    continue
                self._project(conn, dlq, polled)
                batches += 1
        finally:
            self.instruments.stopped()
            consumer.close(autocommit=False)
            dlq.close(10)
            conn.close()

    def _project(self, conn, dlq, polled) -> None:
        started = time.perf_counter()
        rows: list[Row] = []
        next_offsets: dict[tuple[str, int], int] = {}
        dead = []
        for tp, messages in polled.items():
            for m in messages:
                try:
                    rows.append(to_row(self.codec.decode(m.value).record, m.topic, m.partition, m.offset))
                except DecodeError as exc:
                    dead.append(dlq.send(PROJECTIONS_DLQ.name, key=m.topic.encode(), value=m.value, headers=header_list(
                        dlq_headers(reason=exc.reason, topic=m.topic, partition=m.partition, offset=m.offset,
                                    component=self.projector))))
                    self.instruments.dead_lettered(m.topic).inc()
                    log.warning("record_to_dlq", topic=m.topic, partition=m.partition, offset=m.offset, reason=exc.reason)
            self.instruments.consumed(tp.topic).inc(len(messages))
            next_offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        # Commit order: dead letters acknowledged first, then rows + offsets in one transaction.
        for future in dead:
            future.get(timeout=30)
        write_batch(conn, self.projector, rows, next_offsets)
        self.instruments.batch_done(time.perf_counter() - started, len(dead))
        for r in rows:
            log.info("contact_projected", event_id=r.event_id, customer_id=r.customer_id,
                     partition=r.partition, offset=r.offset)


def run_forever(settings: Settings) -> None:
    projector = Projector(settings)
    signal.signal(signal.SIGTERM, lambda *_: projector.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: projector.stop_event.set())
    projector.run()
