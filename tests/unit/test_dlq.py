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
    rejected = rejected_headers(
        reason="y" * 3000,
        connector="meta",
        component="gateway",
        where="entry.0",
        received_at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    assert read["reason"] == rejected["reason"] and len(read["reason"]) == REASON_LIMIT
    assert read == {
        "reason": read["reason"],
        "source_topic": "contacts.v1",
        "source_partition": "2",
        "source_offset": "41",
        "component": "projector:support",
    }
    assert rejected == {
        "reason": read["reason"],
        "connector": "meta",
        "component": "gateway",
        "where": "entry.0",
        "received_at": "2026-11-30T00:00:00+00:00",
    }


class _Producer:
    def __init__(self):
        self.sent, self.waited = [], []

    def send(self, topic, *, key, value, headers):
        self.sent.append((topic, key, value, dict(headers)))
        return len(self.sent)

    def wait(self, futures, what):
        self.waited.append((list(futures), what))


def test_the_dead_letter_writer_sends_the_raw_record_with_the_one_header_format_and_logs_no_value():
    from structlog.testing import capture_logs

    from threadline.dlq import DeadLetters, reason_kind

    counted = []

    class Child:
        def __init__(self, topic):
            self.topic = topic

        def inc(self):
            counted.append(self.topic)

    producer = _Producer()
    writer = DeadLetters(producer, "projections.dlq.v1", "skeleton.contacts", Child)
    secret = "giulia@example.it"
    reason = f"not writable to skeleton.contacts: DataError 22021: bad value {secret}\n" + "z" * 3000
    with capture_logs() as logs:
        future = writer.send(topic="contacts.resolved.v1", partition=4, offset=17, value=b"\x00raw", reason=reason)
    writer.wait([future])
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("projections.dlq.v1", b"contacts.resolved.v1", b"\x00raw")
    assert {k: v.decode() for k, v in headers.items()} == dlq_headers(
        reason=reason, topic="contacts.resolved.v1", partition=4, offset=17, component="skeleton.contacts"
    )
    assert len(headers["reason"].decode()) == REASON_LIMIT
    assert producer.waited == [([1], "dead letters")] and counted == ["contacts.resolved.v1"]
    assert reason_kind(reason) == "not writable to skeleton.contacts"
    assert [e["event"] for e in logs] == ["record_to_dlq"] and secret not in repr(logs)
    assert logs[0]["reason"] == "not writable to skeleton.contacts"
