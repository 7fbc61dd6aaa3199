"""projectors/profiles.py, the pure part: a card's rows become a customer_profile record that the
schema of schemas/avro takes and gives back; which customer ids a batch touches."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import fastavro

import schemas
from projectors.profiles import by_customer, card, consent_query, profile_record, queries, touched_ids
from projectors.rows import AliasOp, Batch

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def rows() -> dict[str, list[dict]]:
    return {
        "summary": [
            {
                "customer_id": "c1",
                "first_contact_at": T0,
                "last_contact_at": T0 + timedelta(days=1),
                "contacts": 3,
                "channels": ["email", "twitter"],
                "language": "it",
                "sentiment_latest": -0.5,
                "sentiment_7d": -0.25,
                "sentiment_prior_23d": None,
                "sentiment_30d": -0.25,
            }
        ],
        "merged": [{"customer_id": "c1", "origin_customer_id": "c0"}],
        "identities": [
            {
                "customer_id": "c1",
                "kind": "email",
                "platform": None,
                "value": "g@example.it",
                "first_seen_at": T0,
                "last_seen_at": T0,
            }
        ],
        "facts": [
            {"customer_id": "c1", "kind": "order_number", "value": "4711", "first_given_at": T0, "last_given_at": T0}
        ],
        "conversations": [
            {
                "customer_id": "c1",
                "conversation_id": "k1",
                "state": "open",
                "channel": "email",
                "channels": ["email"],
                "opened_at": T0,
                "last_event_at": T0,
                "sla_state": "running",
                "merged_into": None,
                "merged_into_customer_id": None,
            },
            {
                "customer_id": "c1",
                "conversation_id": "k0",
                "state": "merged_into",
                "channel": None,
                "channels": None,
                "opened_at": T0,
                "last_event_at": T0,
                "sla_state": "none",
                "merged_into": "k1",
                "merged_into_customer_id": "c1",
            },
        ],
    }


CONSENT = [
    {
        "customer_id": "c1",
        "channel": "email",
        "purpose": "newsletter",
        "granted": True,
        "source": None,
        "signal_at": T0,
        "event_id": "e1",
    }
]


def roundtrip(record: dict) -> dict:
    parsed = schemas.latest(schemas.CUSTOMER_PROFILE).parsed
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parsed)


def test_a_card_becomes_a_profile_the_schema_takes_and_gives_back():
    c = card("c1", "c1", by_customer(rows())["c1"])
    record = profile_record(c, CONSENT[:1], T0 + timedelta(days=2))
    assert roundtrip(record) == record
    assert record["merged_ids"] == ["c0"] and record["last_order"] == "4711"
    assert [o["conversation_id"] for o in record["open_conversations"]] == ["k1"]  # not the merged-away one
    assert record["consent"] == [
        {"channel": "email", "purpose": "newsletter", "granted": True, "source": None, "signal_at": T0}
    ]
    assert record["sentiment"] == {
        "latest": -0.5,
        "recent_7d": -0.25,
        "prior_23d": None,
        "avg_30d": -0.25,
        "baseline": "neutral",
        "trend": c["sentiment"]["trend"],
    }


def test_a_customer_without_rows_is_an_empty_profile_not_an_error():
    record = profile_record(card("c9", "c9", {}), [], T0)
    assert (
        roundtrip(record)["identities"] == [] and record["contacts"] == 0 and record["sentiment"]["trend"] == "unknown"
    )


def test_rows_are_grouped_per_customer_without_their_customer_id_column():
    grouped = by_customer({"identities": [{"customer_id": "a", "value": "1"}, {"customer_id": "b", "value": "2"}]})
    assert grouped["a"]["identities"] == [{"value": "1"}] and grouped["b"]["identities"] == [{"value": "2"}]


def test_a_batch_touches_its_customers_and_both_sides_of_a_merge():
    b = Batch(
        customers=[("c1", T0), ("c2", T0), ("c1", T0)],
        alias_ops=[AliasOp("add", "c0", "c3", "e1", T0), AliasOp("remove", "c4", "c5", "e2", T0)],
    )
    assert touched_ids(b) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert touched_ids(Batch()) == []


def test_every_query_reads_the_given_schema_for_the_given_customers():
    for sql in [*queries("t1_support").values(), consent_query("t1_support")]:
        assert "t1_support." in sql and "any(%(ids)s)" in sql
