"""threadline.kafka.BoundedProducer: every blocking send and wait ends within the produce deadline,
with a fake kafka-python producer (no broker): acknowledged → the metadata; a broker that never
answers → KafkaUnavailable naming Kafka within the deadline and a new producer for the next send;
a refused record → KafkaUnavailable; the importers exit 1 naming Kafka and record nothing
unacknowledged in their ledger; ``identity unlink`` exits 1."""

from __future__ import annotations

import time

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from typer.testing import CliRunner

from threadline.errors import KafkaUnavailable
from threadline.kafka import BoundedProducer
from threadline.settings import Settings

DEADLINE = 0.3


class FakeFuture:
    def __init__(self):
        self.is_done, self.value, self.exception = False, None, None

    def succeed(self, value):
        self.is_done, self.value = True, value

    def fail(self, exc):
        self.is_done, self.exception = True, exc

    def failed(self):
        return self.is_done and self.exception is not None


class FakeProducer:
    """``mode``: ack (flush acknowledges everything), stuck (flush waits out its timeout and
    raises, as kafka-python does while the broker is paused), refuse (the broker answers an
    error), block (send itself times out: no metadata within max_block_ms)."""

    def __init__(self, mode: str):
        self.mode, self.sent, self.closed = mode, [], None

    def send(self, topic, *, key, value, headers):
        if self.mode == "block":
            raise KafkaTimeoutError("Failed to update metadata after 0.3 secs.")
        future = FakeFuture()
        self.sent.append((topic, key, value, headers, future))
        return future

    def flush(self, timeout=None):
        assert timeout is not None, "a flush without a timeout may wait forever"
        for i, (topic, *_, future) in enumerate(self.sent):
            if self.mode == "ack":
                future.succeed((topic, 0, i))
            elif self.mode == "refuse":
                future.fail(NotLeaderForPartitionError())
        if self.mode == "stuck":
            time.sleep(timeout)
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    def close(self, timeout=None):
        self.closed = timeout


class Factory:
    def __init__(self, *modes: str):
        self.modes, self.made = list(modes), []

    def __call__(self):
        producer = FakeProducer(self.modes.pop(0) if len(self.modes) > 1 else self.modes[0])
        self.made.append(producer)
        return producer


def test_acknowledged_sends_return_their_metadata():
    factory = Factory("ack")
    p = BoundedProducer(factory, DEADLINE)
    futures = [p.send("t", key=b"k", value=b"v%d" % i) for i in range(3)]
    assert p.wait(futures) == [("t", 0, 0), ("t", 0, 1), ("t", 0, 2)]
    assert p.wait([]) == []
    assert len(factory.made) == 1 and p.replaced == 0


def test_a_broker_that_never_answers_fails_within_the_deadline_and_the_producer_is_replaced():
    factory = Factory("stuck", "ack")
    p = BoundedProducer(factory, DEADLINE, what="Kafka at broker:9092")
    futures = [p.send("t", key=None, value=b"v")]
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as info:
        p.wait(futures, "dead letters")
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + 0.5, elapsed
    message = str(info.value)
    assert "Kafka at broker:9092" in message and "1 of 1 dead letters" in message
    assert "THREADLINE_PRODUCE_DEADLINE_SECONDS" in message
    stuck = factory.made[0]
    assert stuck.closed == 0, "the stuck producer is dropped without waiting for what it holds"
    # The next send goes to a new producer, which works once the broker does.
    again = p.send("t", key=None, value=b"v")
    assert len(factory.made) == 2 and p.replaced == 1
    assert p.wait([again]) == [("t", 0, 0)]


def test_a_refused_record_is_an_error_not_a_wait():
    p = BoundedProducer(Factory("refuse"), 5.0)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="refused 2 of 2 records"):
        p.wait([p.send("t", key=None, value=b"a"), p.send("t", key=None, value=b"b")])
    assert time.monotonic() - started < 1


def test_a_send_that_cannot_get_metadata_fails_and_resets():
    factory = Factory("block", "ack")
    p = BoundedProducer(factory, DEADLINE)
    with pytest.raises(KafkaUnavailable, match="did not take a record for contacts.v1 within 0.3 s"):
        p.send("contacts.v1", key=None, value=b"v")
    assert p.replaced == 1
    p.send("contacts.v1", key=None, value=b"v")
    assert len(factory.made) == 2


def test_close_waits_no_longer_than_the_deadline():
    factory = Factory("ack")
    p = BoundedProducer(factory, DEADLINE)
    p.close(10)  # nothing made: nothing to close
    assert factory.made == []
    p.send("t", key=None, value=b"v")
    p.close(10)
    assert factory.made[0].closed == DEADLINE


def test_from_settings_bounds_kafka_pythons_own_blocking(monkeypatch):
    import threadline.kafka as kafka

    seen = {}
    monkeypatch.setattr(kafka, "make_producer", lambda settings, **kw: seen.update(kw) or FakeProducer("ack"))
    p = BoundedProducer.from_settings(Settings(produce_deadline_seconds=2.5), client_id="x")
    assert p.deadline == 2.5
    p.send("t", key=None, value=b"v")
    assert seen == {"max_block_ms": 2500, "client_id": "x"}


# -- the importers and identity unlink -------------------------------------------------------------


def _contact(mid: str):
    from connectors.contact import ContactIn

    return ContactIn(
        provider_id=mid,
        connector="chat",
        channel="chat",
        occurred_at="2026-11-22T08:00:00Z",
        identities=[{"kind": "chat_visitor", "value": "v-1"}],
    )


class _Codec:
    def encode(self, topic, subject, record):
        return record["event_id"].encode()


def test_an_import_while_kafka_is_down_fails_and_records_nothing_unacknowledged(tmp_path):
    from connectors.importer import Ledger, run_import
    from connectors.sink import Sink

    ledger_file = tmp_path / "ids"
    sink = Sink(BoundedProducer(Factory("stuck"), DEADLINE), _Codec(), component="mbox")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="did not acknowledge 2 of 2 records"):
        run_import(
            [("line 1", _contact("m1")), ("line 2", _contact("m2"))],
            sink,
            Ledger(ledger_file),
            connector="chat",
            source="x",
        )
    assert time.monotonic() - started < DEADLINE + 0.5
    assert not ledger_file.exists()
    # Once Kafka answers, the same import produces both and records them.
    sink = Sink(BoundedProducer(Factory("ack"), DEADLINE), _Codec(), component="mbox")
    summary = run_import(
        [("line 1", _contact("m1")), ("line 2", _contact("m2"))],
        sink,
        Ledger(ledger_file),
        connector="chat",
        source="x",
    )
    assert summary.produced == 2 and len(ledger_file.read_text().splitlines()) == 2


@pytest.fixture
def kafka_down(monkeypatch, tmp_path):
    monkeypatch.setenv("THREADLINE_HOME", str(tmp_path))
    monkeypatch.setattr(
        BoundedProducer,
        "from_settings",
        classmethod(lambda cls, settings, **kw: cls(Factory("stuck"), DEADLINE, what="Kafka at k:9092")),
    )


def test_ingest_exits_1_naming_kafka(kafka_down, tmp_path, monkeypatch, restore_logging):
    from threadline.tools.cli import app

    monkeypatch.setattr("schemas.codec.make_codec", lambda settings: _Codec())
    cdr = tmp_path / "Master.csv"
    cdr.write_text(
        '"","+390212345678","+393331234567","from-pstn","","SIP/1","SIP/2","Dial","","2026-11-22 08:00:00",'
        '"2026-11-22 08:00:05","2026-11-22 08:01:05",65,60,"ANSWERED","DOCUMENTATION","1732262400.1",""\n'
    )
    r = CliRunner().invoke(app, ["ingest", "asterisk-cdr", str(cdr)])
    assert r.exit_code == 1, r.output
    output = " ".join(r.output.split())
    assert "Kafka at k:9092 did not acknowledge 1 of 1 records" in output and "again once Kafka is back" in output
    assert not (tmp_path / "imports" / "asterisk-cdr.ids").exists()


def test_identity_unlink_exits_1_naming_kafka(kafka_down, restore_logging):
    from threadline.tools.cli import app

    r = CliRunner().invoke(app, ["identity", "unlink", "email:a@example.com", "phone:+393331234567"])
    assert r.exit_code == 1, r.output
    assert "Kafka at k:9092 did not acknowledge 1 of 1 unlink command" in " ".join(r.output.split())
