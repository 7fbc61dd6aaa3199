"""Row shaping, merge roots and as-of filtering: pure, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projectors.rows import (
    CONTACT,
    CONTACT_COLUMNS,
    CONVERSATION_COLUMNS,
    CONVERSATION_EVENT,
    IDENTITY_EVENT,
    Batch,
    alias_ops,
    contact_row,
    rating_of,
    roots,
    within_as_of,
)
from threadline.errors import DecodeError

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def contact(**over) -> dict:
    r = {
        "event_id": "2f1c1a2e-0000-5000-8000-000000000001",
        "event_type": "contact.received",
        "occurred_at": T0,
        "recorded_at": T0 + timedelta(seconds=1),
        "connector": "meta",
        "channel": "review",
        "direction": "inbound",
        "actor": {"role": "customer", "department": None, "id": None, "display_name": None},
        "identities": [
            {"kind": "social", "value": "emre.k", "platform": "instagram", "strength": "asserted", "primary": True}
        ],
        "subject": None,
        "text": "Hızlı kargo, çok memnun kaldım",
        "language": "tr",
        "attachments": [],
        "thread": {
            "message_id": None,
            "in_reply_to": None,
            "references": [],
            "reply_to_id": None,
            "call_id": None,
            "session_id": None,
        },
        "facts": [],
        "consent": [{"purpose": "marketing", "channel": "instagram", "granted": True, "source": None}],
        "provider_id": "r-1",
        "metadata": {"rating": "5"},
        "customer_id": "cust-emre",
    }
    r.update(over)
    return r


def identity_event(kind: str, customer: str, related: list[str], eid: str = "i-1") -> dict:
    return {
        "event_id": eid,
        "event_type": kind,
        "occurred_at": T0,
        "recorded_at": T0,
        "customer_id": customer,
        "identities": [],
        "related_customer_ids": related,
        "rule": None,
        "reason": None,
        "source_event_id": None,
    }


def test_a_review_row_carries_rating_sentiment_platform_and_where_it_was_read():
    row = dict(zip(CONTACT_COLUMNS, contact_row(contact(), 3, 42)))
    assert row["origin_customer_id"] == "cust-emre"
    assert row["rating"] == 5 and row["sentiment"] > 0 and row["platform"] == "instagram"
    assert row["consent"] == '[{"channel":"instagram","granted":true,"purpose":"marketing","source":null}]'
    assert (row["source_partition"], row["source_offset"]) == (3, 42)


def test_a_contact_without_customer_id_is_not_projectable():
    with pytest.raises(DecodeError):
        contact_row(contact(customer_id=None), 0, 0)


@pytest.mark.parametrize(
    "meta, want",
    [
        ({"rating": "4"}, 4),
        ({"rating": "4.0"}, 4),
        ({"rating": "9"}, None),
        ({"rating": "five"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_rating_is_read_from_the_metadata_when_it_is_one_to_five(meta, want):
    assert rating_of(meta) == want


def test_merges_add_edges_and_unmerges_remove_them_without_self_edges():
    ops = alias_ops(identity_event("merged", "B", ["A", "B", "C"]))
    assert [(o.action, o.absorbed, o.survivor) for o in ops] == [("add", "A", "B"), ("add", "C", "B")]
    ops = alias_ops(identity_event("unmerged", "B", ["A"]))
    assert [(o.action, o.absorbed, o.survivor) for o in ops] == [("remove", "A", "B")]
    assert alias_ops(identity_event("linked", "B", ["A"])) == []


def test_roots_follow_merge_chains_to_the_end():
    assert roots({("A", "B"), ("B", "C"), ("D", "C")}) == {"A": "C", "B": "C", "C": "C", "D": "C"}


def test_roots_do_not_depend_on_the_order_edges_arrive_in():
    edges = [("A", "X"), ("A", "Y"), ("Y", "Z")]
    assert roots(set(edges)) == roots(set(reversed(edges)))
    assert roots(set(edges))["A"] == "X"  # two survivors: the smaller id wins


def test_a_merge_cycle_resolves_to_its_smallest_member():
    assert roots({("A", "B"), ("B", "A")}) == {"A": "A", "B": "A"}


def test_as_of_keeps_events_that_happened_at_or_before_the_moment():
    assert within_as_of({"occurred_at": T0}, T0)
    assert not within_as_of({"occurred_at": T0 + timedelta(milliseconds=1)}, T0)
    assert within_as_of({"occurred_at": T0 + timedelta(days=9)}, None)


def test_a_batch_groups_rows_by_table_and_skips_events_after_the_as_of_moment():
    b = Batch()
    b.add(CONTACT, contact(), 0, 1, as_of=T0)
    b.add(
        CONTACT,
        contact(event_id="2f1c1a2e-0000-5000-8000-000000000002", occurred_at=T0 + timedelta(hours=1)),
        0,
        2,
        as_of=T0,
    )
    b.add(IDENTITY_EVENT, identity_event("merged", "cust-emre", ["cust-old"]), 1, 7, as_of=T0)
    assert len(b.contacts) == 1 and b.skipped_as_of == 1
    assert [c[0] for c in b.customers] == ["cust-emre", "cust-emre", "cust-old"]
    assert [(i[1], i[3]) for i in b.identities] == [("social", "emre.k")]
    assert [o.absorbed for o in b.alias_ops] == ["cust-old"]
    assert len(b) == 2


def test_a_conversation_event_flattens_its_sla_clock():
    ev = {
        "event_id": "c-1",
        "event_type": "sla_started",
        "occurred_at": T0,
        "recorded_at": T0,
        "customer_id": "g",
        "conversation_id": "conv-1",
        "channel": "twitter",
        "previous_channel": None,
        "contact_event_id": None,
        "waiting_on": "agent",
        "sla": {
            "kind": "first_response",
            "target_seconds": 3600,
            "started_at": T0,
            "due_at": T0 + timedelta(hours=1),
            "elapsed_seconds": None,
        },
        "facts": [],
    }
    b = Batch()
    b.add(CONVERSATION_EVENT, ev, 2, 5)
    row = dict(zip(CONVERSATION_COLUMNS, b.conversations[0]))
    assert row["sla_kind"] == "first_response" and row["sla_due_at"] == T0 + timedelta(hours=1)
    assert row["waiting_on"] == "agent" and row["facts"] == "[]"


def test_a_v1_conversation_event_has_version_0_and_no_state():
    ev = {
        "event_id": "c-1",
        "event_type": "opened",
        "occurred_at": T0,
        "recorded_at": T0,
        "customer_id": "g",
        "conversation_id": "conv-1",
        "facts": [],
    }
    b = Batch()
    b.add(CONVERSATION_EVENT, ev, 0, 1)
    row = dict(zip(CONVERSATION_COLUMNS, b.conversations[0]))
    assert row["version"] == 0 and row["status"] is None and row["open_sla_kind"] is None


def test_a_v2_conversation_event_keeps_its_version_and_the_state_after_it():
    clock = {
        "kind": "resolution",
        "target_seconds": 86400,
        "started_at": T0,
        "due_at": T0 + timedelta(days=1),
        "elapsed_seconds": 0,
        "state": "running",
    }
    first = {
        "kind": "first_response",
        "target_seconds": 3600,
        "started_at": T0,
        "due_at": T0 + timedelta(hours=1),
        "elapsed_seconds": 0,
        "state": "running",
    }
    ev = {
        "event_id": "c-2",
        "event_type": "sla_started",
        "occurred_at": T0,
        "recorded_at": T0,
        "customer_id": "g",
        "conversation_id": "conv-1",
        "channel": "email",
        "waiting_on": "agent",
        "sla": clock,
        "facts": [],
        "version": 5,
        "status": "open",
        "opened_at": T0,
        "messages": 1,
        "breaches": 0,
        "open_sla": first,
        "merged_into": None,
        "merged_into_customer_id": None,
    }
    b = Batch()
    b.add(CONVERSATION_EVENT, ev, 0, 2)
    row = dict(zip(CONVERSATION_COLUMNS, b.conversations[0]))
    assert (row["version"], row["status"], row["state_messages"], row["state_breaches"]) == (5, "open", 1, 0)
    assert row["sla_kind"] == "resolution" and row["sla_state"] == "running"
    assert row["open_sla_kind"] == "first_response" and row["open_sla_due_at"] == T0 + timedelta(hours=1)


def test_the_split_off_side_of_an_operator_unlink_absorbs_nobody():
    """The unlink's events: survivor ``unmerged`` (related: split-off), split-off ``merged``
    (related: survivor, its identities came from there). Only the edge removal applies."""
    unmerged = {
        "event_id": "u",
        "event_type": "unmerged",
        "occurred_at": T0,
        "customer_id": "sam",
        "related_customer_ids": ["sam-mail"],
        "reason": "unlinked_by_operator",
    }
    split = {
        "event_id": "m",
        "event_type": "merged",
        "occurred_at": T0,
        "customer_id": "sam-mail",
        "related_customer_ids": ["sam"],
        "reason": "unlinked_by_operator",
    }
    assert [(o.action, o.absorbed, o.survivor) for o in alias_ops(unmerged)] == [("remove", "sam-mail", "sam")]
    assert alias_ops(split) == []
    merged = {**split, "customer_id": "sam", "related_customer_ids": ["sam-mail"], "reason": None}
    assert [(o.action, o.absorbed, o.survivor) for o in alias_ops(merged)] == [("add", "sam-mail", "sam")]


def test_a_record_of_an_unknown_schema_is_refused():
    with pytest.raises(DecodeError):
        Batch().add("threadline.other.Thing", {"occurred_at": T0}, 0, 0)


def test_a_record_with_nothing_to_clean_is_checked_without_a_walk_in_python(monkeypatch):
    from projectors import rows

    walks = []
    walk = rows._unstorable
    monkeypatch.setattr(rows, "_unstorable", lambda v: walks.append(v) or walk(v))
    clean = contact(text="Ciao è tutto ok \\u0000 (a backslash, not a NUL)", facts=[{"kind": "k", "value": "v"}])
    assert rows.storable(clean) is clean
    dirty = contact(text="rotto\x00", metadata={"k\x00": "\ud800"})
    assert rows.storable(dirty)["text"] == "rotto\ufffd"
    assert rows.storable(dirty)["metadata"] == {"k\ufffd": "\ufffd"}
    records = [w for w in walks if w is clean or w is dirty]  # the walks begun from the top (not their recursion)
    assert len(records) == 1 + 2  # only what orjson could not vouch for: the escape look-alike, then dirty twice
    walks.clear()
    assert rows.storable(contact(text="tutto ok")) is not None and walks == []
    odd = {1: "x", "big": 2**70}  # orjson refuses both: the walk decides
    assert rows.storable(odd) is odd


def test_the_jsonb_columns_are_written_as_the_json_encoder_writes_them():
    import json

    from projectors import rows

    for value in ([{"b": 1, "a": ["è", 1.5, None, True]}], {"z": {"y": "\u2028"}}, {1: "int key"}, {"n": 2**70}, []):
        assert json.loads(rows._json(value)) == json.loads(rows._encode(value))
    with pytest.raises(TypeError):  # what the json encoder refuses stays refused (the record is dead-lettered)
        rows._json({"at": T0})
