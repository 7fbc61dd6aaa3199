"""projectors/erasure.py: the pure parts of an erasure and of the access bundle."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from projectors.erasure import Component, bundle, erased_event, tombstones
from schemas.privacy import Subject
from tests.privacy_scan import scan

COMP = Component(
    customer_ids=("c-1", "c-2"),
    identities=(Subject("email", "giulia@example.it"),),
    facts=(Subject("fact:order_number", "4711"),),
    event_ids=("e-1", "e-2"),
    conversation_ids=("v-1",),
)


def test_tombstones_cover_profiles_changelogs_graph_nodes_and_evidence():
    stones = tombstones(COMP, ["email:abc@pseudonym.invalid"], topic_prefix="pv1")
    assert ("customer-profiles.v1", b"c-1") in stones  # the projectors' topic is never prefixed
    assert ("pv1.streams.conversations.changelog.v1", b'"c-2"') in stones
    assert ("pv1.streams.identity-graph.changelog.v1", b'"n:email:abc@pseudonym.invalid"') in stones
    assert ("pv1.streams.identity-graph.changelog.v1", b'"e:e-1"') in stones
    assert ("pv1.streams.identity-contacts.changelog.v1", b'"e-2"') in stones
    assert len(stones) == 2 * 2 + 1 + 2 * 2
    assert tombstones(COMP, [])[1][0] == "streams.conversations.changelog.v1"


def test_the_erased_event_has_ids_and_counts_and_no_personal_value():
    at = datetime(2026, 11, 30, tzinfo=UTC)
    event = erased_event(COMP, keys_destroyed=2, rows=9, tombstones=9, at=at, requested_by="cli", event_id="x")
    assert event == {
        "event_id": "x",
        "event_type": "erased",
        "occurred_at": at,
        "customer_ids": ["c-1", "c-2"],
        "identities": 1,
        "facts": 1,
        "keys_destroyed": 2,
        "read_model_rows": 9,
        "tombstones": 9,
        "requested_by": "cli",
    }
    assert scan(json.dumps(event, default=str).encode(), ["giulia@example.it", "4711"]) == []


def test_the_event_encodes_with_the_erasure_schema():
    from schemas.codec import SingleObjectCodec

    at = datetime(2026, 11, 30, tzinfo=UTC)
    codec = SingleObjectCodec()
    event = erased_event(COMP, keys_destroyed=2, rows=9, tombstones=9, at=at, requested_by="api", event_id="x")
    assert codec.decode(codec.encode("privacy.erasures.v1", "erasure", event)).record == event


def test_the_bundle_gathers_facts_once_and_keeps_everything_else():
    at = datetime(2026, 11, 30, tzinfo=UTC)
    contacts = [
        {
            "event_id": "e-1",
            "occurred_at": "2026-11-22T10:00:00+00:00",
            "facts": [{"kind": "order_number", "value": "4711", "source": "text"}],
            "consent": [{"purpose": "marketing", "channel": "email", "granted": False, "source": "ivr"}],
        },
        {
            "event_id": "e-2",
            "occurred_at": "2026-11-21T10:00:00+00:00",
            "facts": [{"kind": "order_number", "value": "4711", "source": "form"}],
            "consent": [{"purpose": "marketing", "channel": "email", "granted": True, "source": "form"}],
        },
    ]
    events = [{"event_id": "v-e", "facts": [{"kind": "address", "value": "Via Roma 1", "source": None}]}]
    b = bundle(["c-1"], contacts, [{"conversation_id": "v-1"}], events, [{"kind": "email"}], [], at)
    assert b["format"] == "threadline.access-bundle.v1" and b["generated_at"] == at.isoformat()
    assert b["facts"] == [
        {"kind": "address", "value": "Via Roma 1", "source": None},
        {"kind": "order_number", "value": "4711", "source": "text"},
    ]  # the first given (rows come in event time)
    assert b["contacts"] == contacts and b["conversations"] == [{"conversation_id": "v-1"}]
    assert [(x["granted"], x["evidence"]) for x in b["consent"]] == [(True, "e-2"), (False, "e-1")]  # event time
