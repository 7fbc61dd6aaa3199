"""One dead-letter format for every component (threadline/dlq.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline.dlq import REASON_LIMIT, dlq_headers, reason_text, rejected_headers


def test_a_reason_is_one_line_of_at_most_the_limit():
    assert reason_text("DataError:\n  bad byte\tin text") == "DataError: bad byte in text"
    long = reason_text("x" * 5000)
    assert len(long) == REASON_LIMIT and long.endswith("…")


def test_a_record_from_a_topic_and_a_rejected_request_share_the_reason_format():
    read = dlq_headers(reason="y" * 3000, topic="contacts.v1", partition=2, offset=41, component="projector:support")
    rejected = rejected_headers(reason="y" * 3000, connector="meta", component="gateway", where="entry.0",
                                received_at=datetime(2026, 11, 30, tzinfo=UTC))
    assert read["reason"] == rejected["reason"] and len(read["reason"]) == REASON_LIMIT
    assert read == {"reason": read["reason"], "source_topic": "contacts.v1", "source_partition": "2",
                    "source_offset": "41", "component": "projector:support"}
    assert rejected == {"reason": read["reason"], "connector": "meta", "component": "gateway", "where": "entry.0",
                        "received_at": "2026-11-30T00:00:00+00:00"}
