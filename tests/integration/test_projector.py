"""The contacts projection on real Kafka and Postgres: rows and offsets in one transaction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from kafka import KafkaConsumer

import schemas
from connectors.contact import ContactIn, to_record
from projectors.contacts import contacts_projector
from schemas.codec import make_codec
from threadline.catalog import PROJECTIONS_DLQ
from threadline.kafka import make_producer


def _resolved(i: int, unique: str) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    c = ContactIn(
        provider_id=f"{unique}-{i}",
        connector="test",
        channel="email",
        occurred_at=now,
        identities=[{"kind": "email", "value": f"p{i}.{unique}@example.nl"}],
        text=f"bericht {i}",
    )
    return {**to_record(c, now), "customer_id": f"cust-{unique}-{i}"}  # as identity resolution sets it


def _produce(settings, topic, values):
    producer = make_producer(settings)
    for v in values:
        producer.send(topic, key=b"k", value=v)
    producer.flush(30)
    producer.close()


def _offsets(conn, projector) -> int:
    row = conn.execute(
        "select coalesce(sum(next_offset), 0) from projection_offsets where projector = %s", (projector,)
    ).fetchone()
    return row[0]


def _run_until(settings, projector_name, topic, conn, want_offsets, timeout=60.0):
    projector = contacts_projector(settings, name=projector_name, topic=topic)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while _offsets(conn, projector_name) < want_offsets:
            assert time.monotonic() < deadline, f"projector stuck at {_offsets(conn, projector_name)}"
            assert thread.is_alive(), "projector died"
            time.sleep(0.2)
    finally:
        projector.stop_event.set()
        thread.join(30)


@pytest.fixture
def pg(settings):
    with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as conn:
        yield conn


def test_projector_writes_rows_once_sends_garbage_to_the_dlq_and_resumes_from_its_stored_offsets(
    settings, catalog_topics, new_topic, unique, pg
):
    topic = new_topic(partitions=3)
    name = f"test-{unique}"
    codec = make_codec(settings)
    records = [_resolved(i, unique) for i in range(5)]
    encoded = [codec.encode(topic, schemas.CONTACT, r) for r in records]
    dlq_end_before = _dlq_end(settings)
    # Five contacts, one duplicate delivery, one record that is not an event at all.
    _produce(settings, topic, [*encoded, encoded[2], b"\x07not-avro"])

    _run_until(settings, name, topic, pg, want_offsets=7)
    ids = [r["event_id"] for r in records]
    rows = pg.execute(
        "select event_id::text from skeleton.contacts where event_id = any(%s::uuid[])", (ids,)
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)

    dead = _dlq_records(settings, dlq_end_before)
    mine = [m for m in dead if dict(m.headers).get("source_topic") == topic.encode()]
    assert [m.value for m in mine] == [b"\x07not-avro"]
    headers = dict(mine[0].headers)
    assert headers["component"] == name.encode()
    assert headers["reason"].startswith(b"not in ")  # "not in the Confluent wire format ..." or single-object
    assert headers["source_offset"] == b"6"  # all keyed alike: one partition, the seventh record

    # Resume from the offsets stored in Postgres, not from the beginning: rows removed by hand
    # stay removed, and only the new records are projected.
    pg.execute("delete from skeleton.contacts where event_id = any(%s::uuid[])", (ids[:2],))
    more = [_resolved(i, unique) for i in range(5, 7)]
    _produce(settings, topic, [codec.encode(topic, schemas.CONTACT, r) for r in more])
    _run_until(settings, name, topic, pg, want_offsets=9)
    all_ids = ids + [r["event_id"] for r in more]
    rows = pg.execute(
        "select event_id::text from skeleton.contacts where event_id = any(%s::uuid[])", (all_ids,)
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids[2:] + [r["event_id"] for r in more])
    pg.execute("delete from projection_offsets where projector = %s", (name,))  # a throw-away projector


def _dlq_end(settings) -> int:
    from kafka import TopicPartition

    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        return consumer.end_offsets([TopicPartition(PROJECTIONS_DLQ.name, 0)])[TopicPartition(PROJECTIONS_DLQ.name, 0)]
    finally:
        consumer.close()


def _dlq_records(settings, start: int):
    from kafka import TopicPartition

    tp = TopicPartition(PROJECTIONS_DLQ.name, 0)
    consumer = KafkaConsumer(**settings.kafka.client_config())
    consumer.assign([tp])
    consumer.seek(tp, start)
    out = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500).get(tp, [])
        out.extend(batch)
        if out and not batch:
            break
    consumer.close()
    return out
