"""Shared builders for the unit tests: plain data, no services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.contact import ContactIn

# Millisecond precision: the contact schema stores timestamp-millis, so these survive a round trip.
OCCURRED_AT = datetime(2026, 11, 22, 9, 15, 30, 123000, tzinfo=UTC)
RECORDED_AT = datetime(2026, 11, 22, 9, 15, 31, 456000, tzinfo=UTC)


def full_contact_payload(**overrides) -> dict:
    """A contact with every part of the envelope filled in (Giulia's phone call of the demo)."""
    payload = {
        "provider_id": "CA-7f3e1b",
        "connector": "twilio",
        "channel": "voice",
        "direction": "inbound",
        "occurred_at": OCCURRED_AT.isoformat(),
        "actor": {"role": "customer", "department": "support", "id": None, "display_name": "Giulia"},
        "identities": [
            {"kind": "email", "value": "giulia.rossi@example.it"},
            {"kind": "phone", "value": "+393471234567", "primary": True, "strength": "verified"},
            {"kind": "social", "value": "giuliar", "platform": "twitter", "strength": "hint"},
        ],
        "subject": "Ordine arrivato rotto",
        "text": "Il mio ordine è arrivato rotto, numero 4711.",
        "language": "it",
        "attachments": [
            {
                "name": "foto.jpg",
                "content_type": "image/jpeg",
                "size_bytes": 20480,
                "url": "https://files.example/foto.jpg",
                "sha256": "ab" * 32,
            }
        ],
        "thread": {
            "message_id": "<m1@example.it>",
            "in_reply_to": "<m0@example.it>",
            "references": ["<m0@example.it>"],
            "reply_to_id": "tw-123",
            "call_id": "CA-7f3e1b",
            "session_id": None,
        },
        "facts": [{"kind": "order_number", "value": "4711", "source": "text"}],
        "consent": [{"purpose": "marketing", "channel": "email", "granted": False, "source": "ivr"}],
        "metadata": {"status": "completed", "duration_s": "312"},
        "event_type": "contact.received",
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def full_contact() -> ContactIn:
    return ContactIn.model_validate(full_contact_payload())


@pytest.fixture
def restore_logging(monkeypatch):
    """configure_logging changes process-wide state: put it back after the test (a logger left
    writing to a test's capture, closed since, fails every later test that logs)."""
    import logging

    import structlog

    from threadline import logging as tl_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    tl_level = logging.getLogger("threadline").level
    monkeypatch.setattr(tl_logging, "_configured", False)
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("threadline").setLevel(tl_level)
