"""Contract-valid events, as the connectors and the streams will produce them, for projector tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import schemas
from connectors.contact import ContactIn, to_record
from projectors.read_models import Store
from projectors.rows import Batch
from threadline.kafka import make_producer


def contact(
    customer_id: str,
    provider_id: str,
    channel: str,
    at: datetime,
    *,
    text: str | None = None,
    language: str | None = None,
    identities: list[dict] | None = None,
    **extra,
) -> dict:
    c = ContactIn(
        provider_id=provider_id,
        connector="test",
        channel=channel,
        occurred_at=at,
        text=text,
        language=language,
        identities=identities or [{"kind": "email", "value": f"{customer_id}@example.it"}],
        **extra,
    )
    record = to_record(c, at + timedelta(milliseconds=300))
    record["customer_id"] = customer_id
    return record


def conversation(customer_id: str, conversation_id: str, event_type: str, at: datetime, **extra) -> dict:
    r = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{conversation_id}/{event_type}/{at.isoformat()}")),
        "event_type": event_type,
        "occurred_at": at,
        "recorded_at": at + timedelta(milliseconds=500),
        "customer_id": customer_id,
        "conversation_id": conversation_id,
        "channel": None,
        "previous_channel": None,
        "contact_event_id": None,
        "waiting_on": None,
        "sla": None,
        "facts": [],
    }
    r.update(extra)
    return r


def sla(kind: str, started: datetime, target_seconds: int, elapsed: int | None = None) -> dict:
    return {
        "kind": kind,
        "target_seconds": target_seconds,
        "started_at": started,
        "due_at": started + timedelta(seconds=target_seconds),
        "elapsed_seconds": elapsed,
    }


def identity(
    event_type: str, customer_id: str, at: datetime, related: list[str] = (), identities=(), gen: int | None = None
) -> dict:
    """An identities.v1 event; ``gen``: the identity graph's position (v2), None as a v1 event has none."""
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"id/{event_type}/{customer_id}/{related}/{at}")),
        "event_type": event_type,
        "occurred_at": at,
        "recorded_at": at,
        "customer_id": customer_id,
        "identities": list(identities),
        "related_customer_ids": list(related),
        "rule": "test",
        "reason": None,
        "source_event_id": None,
        "gen": gen,
        "moved_identities": [],
    }


SUBJECT = {"contact": schemas.CONTACT, "conversation": schemas.CONVERSATION_EVENT, "identity": schemas.IDENTITY_EVENT}


def produce(settings, codec, topic: str, subject: str, records: list[dict], raw: list[bytes] = ()) -> None:
    """Encode with the project's codec, keyed by customer_id (as the streams key them)."""
    producer = make_producer(settings)
    for r in records:
        producer.send(topic, key=r["customer_id"].encode(), value=codec.encode(topic, SUBJECT[subject], r))
    for value in raw:
        producer.send(topic, key=b"garbage", value=value)
    producer.flush(30)
    producer.close()


def write_batch(pg, schema: str, records, first_offset: int = 0) -> None:
    """Project ``records`` (``(name, record, *gen)``, as ``Batch.add`` takes them) into ``schema``
    as one batch, at offsets from ``first_offset`` of partition 0, in one transaction."""
    batch = Batch()
    for j, (name, rec, *gen) in enumerate(records):
        batch.add(name, rec, 0, first_offset + j, None, *gen)
    with pg.transaction(), pg.cursor() as cur:
        Store(schema).write(cur, batch)


def write_in_random_batches(pg, schema: str, records, rng, most: int) -> None:
    """``records`` projected into ``schema`` in batches of 1 to ``most`` records (``rng``'s choice),
    at offsets from 0, one transaction each (``write_batch``)."""
    i = 0
    while i < len(records):
        n = rng.randint(1, most)
        write_batch(pg, schema, records[i : i + n], i)
        i += n


def chats(unique: str, n: int, start: int = 0) -> list[dict]:
    """Chat contacts ``start`` .. ``start + n - 1`` of seven customers of run ``unique``, a second
    apart back from now."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        contact(f"c-{unique}-{i % 7}", f"{unique}-{i}", "chat", now - timedelta(seconds=i), text=f"hallo {i}")
        for i in range(start, start + n)
    ]
