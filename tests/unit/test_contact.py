"""connectors/contact.py: deterministic event ids, input validation and the contacts.v1 record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

import schemas
from connectors.contact import THREADLINE_NS, ContactIn, event_id, partition_key, to_record
from schemas.codec import SingleObjectCodec

from .conftest import OCCURRED_AT, RECORDED_AT, full_contact_payload

CONNECTOR = st.from_regex(r"[a-z][a-z0-9_-]{0,39}", fullmatch=True)
PROVIDER_ID = st.text(min_size=1, max_size=64)


@given(CONNECTOR, PROVIDER_ID)
def test_same_provider_message_gets_the_same_event_id(connector, provider_id):
    assert event_id(connector, provider_id) == event_id(connector, provider_id)


@given(CONNECTOR, PROVIDER_ID)
def test_event_id_is_a_uuid5_in_the_threadline_namespace(connector, provider_id):
    eid = uuid.UUID(event_id(connector, provider_id))
    assert eid.version == 5
    assert eid == uuid.uuid5(THREADLINE_NS, f"{connector}:{provider_id}")


@given(CONNECTOR, CONNECTOR, PROVIDER_ID)
def test_same_provider_id_through_another_connector_gets_another_event_id(c1, c2, provider_id):
    assume(c1 != c2)
    assert event_id(c1, provider_id) != event_id(c2, provider_id)


def test_event_id_is_stable_across_releases():
    # Changing the namespace or the name format would re-key history: duplicates stop collapsing.
    assert event_id("twilio", "SM123") == str(
        uuid.uuid5(uuid.UUID("5b0f3c9e-6f1a-5d8e-9c4b-7a1e2d3f4b5c"), "twilio:SM123")
    )


def test_a_retried_delivery_with_other_content_keeps_the_event_id():
    first = ContactIn.model_validate(full_contact_payload(text="first try"))
    retry = ContactIn.model_validate(full_contact_payload(text="second try"))
    assert to_record(first, RECORDED_AT)["event_id"] == to_record(retry, RECORDED_AT)["event_id"]


# --- validation names the field ----------------------------------------------------------------


def _invalid_fields(payload: dict) -> set[str]:
    with pytest.raises(ValidationError) as info:
        ContactIn.model_validate(payload)
    return {".".join(str(p) for p in err["loc"]) for err in info.value.errors()}


def test_missing_provider_id_is_named():
    payload = full_contact_payload()
    del payload["provider_id"]
    assert _invalid_fields(payload) == {"provider_id"}


def test_unknown_channel_is_named():
    assert _invalid_fields(full_contact_payload(channel="carrier_pigeon")) == {"channel"}


def test_occurred_at_without_time_zone_is_named():
    assert _invalid_fields(full_contact_payload(occurred_at="2026-11-22T10:00:00")) == {"occurred_at"}


def test_a_contact_without_identities_is_rejected_naming_identities():
    assert _invalid_fields(full_contact_payload(identities=[])) == {"identities"}


def test_an_unknown_top_level_field_is_rejected_by_name():
    assert _invalid_fields(full_contact_payload(sentiment="angry")) == {"sentiment"}


def test_an_unknown_identity_kind_is_named_by_its_path():
    assert _invalid_fields(full_contact_payload(identities=[{"kind": "fax", "value": "+31201234567"}])) == {
        "identities.0.kind"
    }


def test_a_bad_connector_name_is_rejected():
    assert _invalid_fields(full_contact_payload(connector="Twilio:EU")) == {"connector"}


def test_occurred_at_with_an_offset_is_stored_in_utc():
    contact = ContactIn.model_validate(full_contact_payload(occurred_at="2026-11-22T11:15:30.123+02:00"))
    assert contact.occurred_at == OCCURRED_AT
    assert contact.occurred_at.utcoffset().total_seconds() == 0


# --- the record written to contacts.v1 -----------------------------------------------------------


def test_to_record_encodes_with_the_latest_contact_schema(full_contact):
    codec = SingleObjectCodec()
    record = to_record(full_contact, RECORDED_AT)
    decoded = codec.decode(codec.encode("contacts.v1", schemas.CONTACT, record))
    assert decoded.record == record
    assert decoded.record["customer_id"] is None
    assert decoded.record["recorded_at"] == RECORDED_AT
    assert decoded.record["event_id"] == event_id("twilio", "CA-7f3e1b")


def test_a_minimal_contact_encodes_with_the_latest_contact_schema():
    contact = ContactIn(
        provider_id="m1",
        channel="chat",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        identities=[{"kind": "cookie", "value": "ck-1"}],
    )
    codec = SingleObjectCodec()
    record = to_record(contact, RECORDED_AT)
    assert codec.decode(codec.encode("contacts.v1", schemas.CONTACT, record)).record == record


IDENTITY = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["email", "phone", "social", "account"]),
        "value": st.text(alphabet="abc123+@.", min_size=1, max_size=12),
        "primary": st.booleans(),
    }
)


@given(st.lists(IDENTITY, min_size=1, max_size=6))
def test_to_record_marks_exactly_one_identity_primary(identities):
    contact = ContactIn.model_validate(full_contact_payload(identities=identities))
    marked = [i for i in to_record(contact, RECORDED_AT)["identities"] if i["primary"]]
    assert len(marked) == 1
    flagged = [i for i in identities if i["primary"]]
    expected = flagged[0] if flagged else identities[0]
    assert (marked[0]["kind"], marked[0]["value"]) == (expected["kind"], expected["value"])


def test_partition_key_is_the_primary_identity(full_contact):
    assert partition_key(full_contact) == b"phone:+393471234567"


def test_partition_key_falls_back_to_the_first_identity_and_names_the_platform():
    contact = ContactIn.model_validate(
        full_contact_payload(
            identities=[
                {"kind": "social", "value": "giuliar", "platform": "twitter"},
                {"kind": "email", "value": "giulia.rossi@example.it"},
            ]
        )
    )
    assert partition_key(contact) == b"social:twitter:giuliar"


def test_partition_key_does_not_depend_on_where_the_primary_identity_is_listed(full_contact):
    reordered = ContactIn.model_validate(
        full_contact_payload(identities=list(reversed(full_contact_payload()["identities"])))
    )
    assert partition_key(reordered) == partition_key(full_contact)


def _contact_models():
    import connectors.contact as contact
    from pydantic import BaseModel

    return [
        m for m in vars(contact).values() if isinstance(m, type) and issubclass(m, BaseModel) and m is not BaseModel
    ]


def test_no_contact_model_has_a_shared_mutable_default():
    """pydantic deep-copies an unhashable default on every validation that uses it: the contact
    models build theirs with a factory instead."""
    from pydantic_core import PydanticUndefined

    shared = []
    for model in _contact_models():
        for name, field in model.model_fields.items():
            if field.default is not PydanticUndefined and field.default is not None:
                try:
                    hash(field.default)
                except TypeError:
                    shared.append(f"{model.__name__}.{name}")
    assert shared == []


def test_factory_defaults_are_documented_and_fresh_per_contact():
    schema = ContactIn.model_json_schema()
    props = schema["properties"]
    assert props["attachments"]["default"] == [] and props["metadata"]["default"] == {}
    assert props["actor"]["default"] == {"role": "customer", "department": None, "id": None, "display_name": None}
    assert schema["$defs"]["ThreadIn"]["properties"]["references"]["default"] == []
    assert "actor" not in schema.get("required", []) and "thread" not in schema.get("required", [])
    minimal = {
        "provider_id": "p",
        "channel": "chat",
        "occurred_at": OCCURRED_AT,
        "identities": [{"kind": "other", "value": "v"}],
    }
    a, b = ContactIn.model_validate(minimal), ContactIn.model_validate(minimal)
    a.facts.append(a.identities[0])  # type: ignore[arg-type]
    a.thread.references.append("x")
    assert b.facts == [] and b.thread.references == [] and a.actor is not b.actor
