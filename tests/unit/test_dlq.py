"""One dead-letter format for every component, every dead letter made in one place (threadline/dlq.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from threadline.dlq import (
    REASON_LIMIT,
    _read_headers,
    _rejected_headers,
    of_read_record,
    of_rejected_payload,
    reason_text,
)


def test_a_reason_is_one_line_of_at_most_the_limit():
    assert reason_text("DataError:\n  bad byte\tin text") == "DataError: bad byte in text"
    long = reason_text("x" * 5000)
    assert len(long) == REASON_LIMIT and long.endswith("…")


def test_a_record_from_a_topic_and_a_rejected_request_share_the_reason_format():
    read = _read_headers(reason="y" * 3000, topic="contacts.v1", partition=2, offset=41, component="projector:support")
    rejected = _rejected_headers(
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
    assert {k: v.decode() for k, v in headers.items()} == _read_headers(
        reason=reason, topic="contacts.resolved.v1", partition=4, offset=17, component="skeleton.contacts"
    )
    assert len(headers["reason"].decode()) == REASON_LIMIT
    assert producer.waited == [([1], "dead letters")] and counted == ["contacts.resolved.v1"]
    assert reason_kind(reason) == "not writable to skeleton.contacts"
    assert [e["event"] for e in logs] == ["record_to_dlq"] and secret not in repr(logs)
    assert logs[0]["reason"] == "not writable to skeleton.contacts"


def test_both_kinds_of_dead_letter_are_made_in_one_place_and_sealed_by_the_callers_hook():
    def seal(raw):
        return b"sealed:" + raw[::-1], {"sealed_key": "k1"}

    read = of_read_record(
        topic="contacts.v1", partition=1, offset=9, value=b"abc", reason="DecodeError: x", component="worker", seal=seal
    )
    assert (read.key, read.value) == (b"contacts.v1", b"sealed:cba")
    assert read.headers["sealed_key"] == "k1" and read.headers["source_offset"] == "9"
    rejected = of_rejected_payload(
        connector="meta", raw=b"{}", reason="unmapped: y", component="gateway", extra={"request_id": "r1"}
    )
    assert (rejected.key, rejected.value) == (b"meta", b"{}")
    assert rejected.headers["request_id"] == "r1" and "sealed_key" not in rejected.headers
    assert rejected.headers["reason"] == "unmapped: y" and rejected.headers["connector"] == "meta"


def test_no_component_composes_dead_letter_headers_of_its_own():
    """The stream stages, the projector engine and the gateway's sink all go through
    ``of_read_record`` / ``of_rejected_payload``; nothing else builds the headers."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    makers = re.compile(r"_read_headers|_rejected_headers|reason_text\(|\"source_topic\": ")
    found = [
        str(path.relative_to(repo))
        for package in ("threadline", "connectors", "streams", "projectors", "schemas")
        for path in (repo / package).rglob("*.py")
        if path.name != "dlq.py" and makers.search(path.read_text())
    ]
    assert found == []
    users = {
        str(path.relative_to(repo))
        for package in ("connectors", "streams", "projectors")
        for path in (repo / package).rglob("*.py")
        if re.search(r"of_read_record|of_rejected_payload|DeadLetters\(", path.read_text())
    }
    assert {"streams/stage.py", "connectors/sink.py", "projectors/engine/runner.py"} <= users
