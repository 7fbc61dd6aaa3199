"""streams/identity.py: the minimal, deterministic identity rule."""

from __future__ import annotations

import copy
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.contact import to_record
from streams.identity import minimal_customer_id, resolve

from .conftest import RECORDED_AT

IDENTITIES = [
    {"kind": "email", "value": "giulia.rossi@example.it", "platform": None, "primary": False},
    {"kind": "phone", "value": "+393471234567", "platform": None, "primary": True},
    {"kind": "social", "value": "giuliar", "platform": "twitter", "primary": False},
    {"kind": "account", "value": "A-1001", "platform": "shop", "primary": False},
]


def test_same_contact_gets_the_same_customer_id():
    contact = {"identities": copy.deepcopy(IDENTITIES)}
    first = minimal_customer_id(contact)
    assert first == minimal_customer_id(copy.deepcopy(contact))
    assert uuid.UUID(first).version == 5


@given(st.permutations(IDENTITIES))
def test_customer_id_does_not_depend_on_the_order_of_identities(order):
    assert minimal_customer_id({"identities": order}) == minimal_customer_id({"identities": IDENTITIES})


def test_customer_id_follows_the_primary_identity():
    phone_first = {"identities": [{**IDENTITIES[1], "primary": False}, {**IDENTITIES[0], "primary": False}]}
    email_primary = {"identities": [IDENTITIES[1] | {"primary": False}, IDENTITIES[0] | {"primary": True}]}
    assert minimal_customer_id(phone_first) == minimal_customer_id({"identities": [IDENTITIES[1]]})
    assert minimal_customer_id(email_primary) != minimal_customer_id(phone_first)


def test_the_platform_of_a_handle_is_part_of_the_identity():
    on_twitter = {"identities": [{"kind": "social", "value": "giuliar", "platform": "twitter"}]}
    on_instagram = {"identities": [{"kind": "social", "value": "giuliar", "platform": "instagram"}]}
    assert minimal_customer_id(on_twitter) != minimal_customer_id(on_instagram)


def test_resolve_sets_customer_id_on_a_copy_and_leaves_the_input_alone(full_contact):
    record = to_record(full_contact, RECORDED_AT)
    before = copy.deepcopy(record)
    resolved = resolve(record)
    assert record == before
    assert record["customer_id"] is None
    assert resolved["customer_id"] == minimal_customer_id(record)
    assert {k: v for k, v in resolved.items() if k != "customer_id"} == {
        k: v for k, v in before.items() if k != "customer_id"}


def test_a_contact_without_identities_cannot_be_resolved():
    with pytest.raises(ValueError, match="without identities"):
        resolve({"event_id": "e1", "identities": []})
