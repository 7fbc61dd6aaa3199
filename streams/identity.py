"""Identity resolution rules (pure).

The foundation step is deliberately minimal: a contact's customer is named after its primary
identity, deterministically, so the same identity always lands on the same customer id and
the same partition of contacts.resolved.v1. The identity graph (links, merges, unmerges,
guardrails) replaces ``minimal_customer_id`` without changing the stream wiring.
"""

from __future__ import annotations

import uuid

CUSTOMER_NS = uuid.UUID("0c6f8a52-3f5e-5b7d-8e21-4d9a6b1c2e3f")


def identity_key(identity: dict) -> str:
    platform = f"{identity['platform']}:" if identity.get("platform") else ""
    return f"{identity['kind']}:{platform}{identity['value']}"


def primary(identities: list[dict]) -> dict:
    if not identities:
        raise ValueError("a contact without identities cannot be resolved")
    return next((i for i in identities if i.get("primary")), identities[0])


def minimal_customer_id(contact: dict) -> str:
    return str(uuid.uuid5(CUSTOMER_NS, identity_key(primary(contact["identities"]))))


def resolve(contact: dict) -> dict:
    """The same contact with customer_id set (a new dict; the input is not changed)."""
    return {**contact, "customer_id": minimal_customer_id(contact)}
