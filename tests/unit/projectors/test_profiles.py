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


def _ring():
    import os

    from schemas.privacy import MasterKeyWrapper, MemoryKeyRing, Pseudonymizer

    return MemoryKeyRing(Pseudonymizer(b"p" * 32), MasterKeyWrapper(os.urandom(32)))


def test_with_privacy_on_a_profile_carries_pseudonyms_and_the_reader_codec_opens_them():
    from projectors.profiles import Publisher
    from schemas.privacy import CUSTOMER_PROFILE_FULLNAME, fact_subject, identity_subject, open_one, tokens_in
    from tests.privacy_scan import scan

    ring = _ring()
    record = profile_record(card("c1", "c1", by_customer(rows())["c1"]), CONSENT[:1], T0)
    ident, fact = record["identities"][0], record["facts"][0]
    ring.ensure([identity_subject(ident), fact_subject(fact)])  # as the gateway made them when sealing
    pub = Publisher("support", "support", None, "customer-profiles.v1", keyring=ring)
    [(key, sealed)] = pub.pseudonymized([("c1", record)])
    assert key == "c1" and roundtrip(sealed) == sealed
    assert scan(repr(sealed).encode(), ["g@example.it", "4711"]) == []
    assert len(tokens_in(CUSTOMER_PROFILE_FULLNAME, sealed)) == 2
    assert open_one(CUSTOMER_PROFILE_FULLNAME, sealed, ring) == record
    # privacy off: published as the read model has it
    assert Publisher("support", "support", None, "t").pseudonymized([("c1", record)]) == [("c1", record)]


def test_a_profile_leaves_out_what_has_no_live_key_and_never_creates_one():
    from projectors.profiles import Publisher
    from schemas.privacy import identity_subject

    ring = _ring()
    record = profile_record(card("c1", "c1", by_customer(rows())["c1"]), [], T0)
    ring.ensure([identity_subject(record["identities"][0])])
    ring.destroy(ring.tokens_of(identity_subject(record["identities"][0])))  # erased meanwhile
    [(_, sealed), merged] = Publisher("s", "s", None, "t", keyring=ring).pseudonymized([("c1", record), ("c0", None)])
    assert merged == ("c0", None)  # a tombstone stays one
    assert sealed["identities"] == [] and sealed["facts"] == [] and sealed["last_order"] is None
    assert len(ring.rows) == 1  # no key made for the fact, none again for the erased address


def test_a_customer_who_withdrew_marketing_consent_has_no_sentiment_in_the_profile():
    from projectors.profiles import without_marketing

    withdrawal = {**CONSENT[0], "purpose": "marketing", "granted": False, "signal_at": T0 + timedelta(hours=1)}
    grant = {**CONSENT[0], "channel": "sms", "purpose": "marketing", "granted": True, "event_id": "e0"}
    record = profile_record(card("c1", "c1", by_customer(rows())["c1"]), [grant, withdrawal], T0)
    assert record["sentiment"]["latest"] == -0.5
    out = without_marketing(record, [grant, withdrawal])
    assert out["sentiment"] == {
        "latest": None,
        "recent_7d": None,
        "prior_23d": None,
        "avg_30d": None,
        "baseline": "neutral",
        "trend": "unknown",
    }
    assert roundtrip(out) == out and out["consent"] == record["consent"]
    # a later grant (event time) brings it back; other purposes do not count
    regrant = {**grant, "signal_at": T0 + timedelta(hours=2)}
    assert without_marketing(record, [regrant, withdrawal]) == record
    assert without_marketing(record, [CONSENT[0] | {"granted": False}]) == record
