"""A record PostgreSQL will not take never stops a projector: text it rejects is made storable
(U+FFFD), a record it still refuses goes to projections.dlq.v1 with the reason, and the records
after it on the same partition are projected. Real Kafka and PostgreSQL, both projections (read models, contacts)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition

import schemas
from projector_events import contact, produce
from projectors.contacts import contacts_projector
from projectors.engine.schema import live_schema
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets
from threadline.catalog import PROJECTIONS_DLQ
from threadline.kafka import make_producer

# One contact per kind of character PostgreSQL rejects, in text and in jsonb.
NUL = "Ordine 4711\x00 arrivato rotto"  # text: NUL
NUL_IN_JSON = "4711\x00"  # a fact value (jsonb): NUL
HIGH, LOW = "ciao \ud800 mondo", "ciao \udfff mondo"  # unpaired surrogates (no UTF-8 encoding)


def _dlq_end(settings) -> int:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tp = TopicPartition(PROJECTIONS_DLQ.name, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def _dlq_from(settings, start: int, topic: str, want: int, timeout: float = 30.0) -> list:
    tp = TopicPartition(PROJECTIONS_DLQ.name, 0)
    consumer = KafkaConsumer(**settings.kafka.client_config())
    consumer.assign([tp])
    consumer.seek(tp, start)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < want:
            for m in consumer.poll(timeout_ms=500).get(tp, []):
                if dict(m.headers).get("source_topic") == topic.encode():
                    out.append(m)
    finally:
        consumer.close()
    return out


def _invalid_utf8(settings, codec, topic: str, record: dict) -> bytes:
    """The record encoded with a surrogate's CESU-8 bytes (ED A0 80) in its text: what a producer
    that does not check UTF-8 could write. It does not decode: a DLQ case, not a crash."""
    value = codec.encode(topic, schemas.CONTACT, {**record, "text": "@@@"})
    assert value.count(b"@@@") == 1
    return value.replace(b"@@@", b"\xed\xa0\x80")


def _story(cid: str, unique: str) -> tuple[list[dict], dict, dict]:
    """Projected: before, nul (cleaned), after. Dead-lettered: huge (refused), bad_utf8 (undecodable).
    An unpaired surrogate cannot reach a projector as text: UTF-8 has no encoding for it, so on the
    wire it is invalid bytes (bad_utf8); inside the process ``storable`` handles it (last test)."""
    now = datetime.now(UTC).replace(microsecond=0)
    at = [now - timedelta(minutes=10 - i) for i in range(8)]
    before = contact(cid, f"{unique}-before", "chat", at[0], text="prima", language="it")
    nul = contact(
        cid,
        f"{unique}-nul",
        "email",
        at[1],
        text=NUL,
        language="it",
        subject="rotto\x00",
        facts=[{"kind": "order_number", "value": NUL_IN_JSON}],
    )
    # An identity value too large for a btree index entry: PostgreSQL refuses the row (54000).
    # (Set on the record: the contact model caps identity values, a producer of the topic may not.)
    huge = contact(
        cid,
        f"{unique}-huge",
        "chat",
        at[4],
        text="troppo lungo",
        language="it",
        identities=[{"kind": "email", "value": f"{cid}@example.it"}, {"kind": "cookie", "value": "c"}],
    )
    huge["identities"][1]["value"] = secrets.token_urlsafe(12_000)
    bad_utf8 = contact(cid, f"{unique}-bytes", "chat", at[5], text="x", language="it")
    after = contact(cid, f"{unique}-after", "chat", at[6], text="dopo", language="it")
    return [before, nul, after], huge, bad_utf8


def test_the_read_model_projector_cleans_rejected_characters_dead_letters_what_postgres_refuses_and_goes_on(
    prefixed, sources, codec, unique, pg
):
    cid = f"poison-{unique}"
    records, huge, bad_utf8 = _story(cid, unique)
    dlq_start = _dlq_end(prefixed)
    produce(prefixed, codec, sources.contacts, "contact", records[:2])
    produce(prefixed, codec, sources.contacts, "contact", [huge])
    producer = make_producer(prefixed)
    producer.send(sources.contacts, key=cid.encode(), value=_invalid_utf8(prefixed, codec, sources.contacts, bad_utf8))
    producer.flush(30)
    producer.close()
    produce(prefixed, codec, sources.contacts, "contact", [records[-1]])

    targets = end_offsets(prefixed, sources.topics())
    stats = read_model_projector(prefixed, "support", sources=sources, codec=codec).run(stop_at=targets)

    schema = live_schema(prefixed, "support")
    got = dict(
        pg.execute(
            f"select event_id::text, text from {schema}.contacts where origin_customer_id = %s", (cid,)
        ).fetchall()
    )
    before, nul, after = records[0], records[1], records[-1]
    assert set(got) == {before["event_id"], nul["event_id"], after["event_id"]}
    assert got[nul["event_id"]] == "Ordine 4711\ufffd arrivato rotto"  # cleaned, the rest kept
    subject, facts = pg.execute(
        f"select subject, facts from {schema}.contacts where event_id = %s", (nul["event_id"],)
    ).fetchone()
    assert subject == "rotto\ufffd" and facts[0]["value"] == "4711\ufffd"
    stored = {
        (t, p): o
        for t, p, o in pg.execute(
            "select topic, partition, next_offset from projection_offsets where projector = %s", (schema,)
        ).fetchall()
    }
    assert (
        sum(o for (t, _), o in stored.items() if t == sources.contacts)
        == sum(o for (t, _), o in targets.items() if t == sources.contacts)
        == 5
    )  # past every record
    assert stats.dead_letters == 2

    dead = _dlq_from(prefixed, dlq_start, sources.contacts, want=2)
    reasons = {dict(m.headers)["source_offset"]: dict(m.headers)["reason"].decode() for m in dead}
    assert len(dead) == 2, reasons
    by_reason = sorted(reasons.values())
    assert any("ProgramLimitExceeded" in r and "54000" in r for r in by_reason), by_reason
    assert any("does not decode" in r for r in by_reason), by_reason
    huge_dead = next(m for m in dead if b"ProgramLimitExceeded" in dict(m.headers)["reason"])
    assert huge_dead.value == codec.encode(sources.contacts, schemas.CONTACT, huge)  # the raw record, as read


def test_the_contacts_projector_cleans_rejected_characters_dead_letters_what_postgres_refuses_and_goes_on(
    settings, new_topic, catalog_topics, codec, unique, pg
):
    topic = new_topic(partitions=1)
    name = f"test-poison-{unique}"
    cid = f"poison-{unique}"
    records, huge, bad_utf8 = _story(cid, unique)
    # skeleton.contacts has no index on identity values: a too-long customer id is its refused row.
    huge = {**huge, "customer_id": secrets.token_urlsafe(12_000)}
    dlq_start = _dlq_end(settings)
    produce(settings, codec, topic, "contact", records[:2] + [huge])
    producer = make_producer(settings)
    producer.send(topic, key=cid.encode(), value=_invalid_utf8(settings, codec, topic, bad_utf8))
    producer.flush(30)
    producer.close()
    produce(settings, codec, topic, "contact", [records[-1]])
    want = sum(end_offsets(settings, [topic]).values())

    projector = contacts_projector(settings, codec=codec, name=name, topic=topic)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while (
            pg.execute(
                "select coalesce(sum(next_offset), 0) from projection_offsets where projector = %s", (name,)
            ).fetchone()[0]
            < want
        ):
            assert thread.is_alive(), "the projector stopped"
            assert time.monotonic() < deadline, "the projector did not get past the poison records"
            time.sleep(0.2)
    finally:
        projector.stop_event.set()
        thread.join(30)
    ids = [r["event_id"] for r in records]
    got = dict(
        pg.execute(
            "select event_id::text, text from skeleton.contacts where event_id = any(%s::uuid[])",
            (ids + [huge["event_id"]],),
        ).fetchall()
    )
    assert set(got) == {records[0]["event_id"], records[1]["event_id"], records[-1]["event_id"]}
    assert got[records[1]["event_id"]] == "Ordine 4711\ufffd arrivato rotto"
    dead = _dlq_from(settings, dlq_start, topic, want=2)
    reasons = sorted(dict(m.headers)["reason"].decode() for m in dead)
    assert len(dead) == 2 and any("does not decode" in r for r in reasons), reasons
    assert any(r.startswith("not writable to skeleton.contacts") for r in reasons), reasons
    pg.execute("delete from projection_offsets where projector = %s", (name,))


@pytest.mark.parametrize("text", [NUL, HIGH, LOW, "\x00", "\ud83d\ude00\x00\udbff"])
def test_text_postgres_rejects_is_stored_with_the_rest_kept(pg, text):
    """Every class of character PostgreSQL rejects, through the row shaping, into text and jsonb."""
    from projectors.rows import storable

    clean = storable({"text": text, "facts": [{"value": text}]})
    row = pg.execute(
        "select %s::text, %s::jsonb", (clean["text"], json.dumps(clean["facts"], ensure_ascii=False))
    ).fetchone()
    assert row[0] == clean["text"] and row[1] == clean["facts"]
    assert [c for c in text if c not in "\x00" and not 0xD800 <= ord(c) <= 0xDFFF] == [
        c for c in row[0] if c != "\ufffd"
    ]


def test_a_rebuild_whose_first_batch_holds_a_refused_record_dead_letters_it_and_finishes(
    prefixed, sources, codec, unique, pg
):
    """A rebuild's first pass writes without the lookup indexes and the contacts' primary key:
    they are dropped before the first batch, on their own, not in the batch's transaction, whose
    savepoint a refused record rolls back (the finish then made an index that was still there and
    the rebuild failed). The contacts, copied as read (one twice), are each kept once."""
    from projectors.replay import rebuild

    cid = f"poison-rebuild-{unique}"
    records, huge, bad_utf8 = _story(cid, unique)
    dlq_start = _dlq_end(prefixed)
    produce(prefixed, codec, sources.contacts, "contact", [records[0], huge, records[1], records[0]])
    producer = make_producer(prefixed)
    producer.send(sources.contacts, key=cid.encode(), value=_invalid_utf8(prefixed, codec, sources.contacts, bad_utf8))
    producer.flush(30)
    producer.close()
    produce(prefixed, codec, sources.contacts, "contact", [records[-1]])

    result = rebuild(prefixed, "support", sources=sources, codec=codec)

    assert result.swapped and result.events == 6
    schema = live_schema(prefixed, "support")
    got = pg.execute(
        f"select event_id::text, text from {schema}.contacts where origin_customer_id = %s order by 1", (cid,)
    ).fetchall()
    assert sorted(e for e, _ in got) == sorted(r["event_id"] for r in records)  # each once
    assert dict(got)[records[1]["event_id"]] == "Ordine 4711\ufffd arrivato rotto"
    (key,) = pg.execute(
        "select count(*) from pg_constraint c join pg_namespace n on n.oid = c.connamespace"
        " where n.nspname = %s and c.conname = 'contacts_pkey'",
        (schema,),
    ).fetchone()
    assert key == 1  # the primary key is back for the live batches after the swap
    dead = _dlq_from(prefixed, dlq_start, sources.contacts, want=2)
    assert len(dead) == 2
