"""streams/identity_stage.py ContactReader: the identity stage reads a contact's fields without
decoding the rest, and what it reads gives the graph, the resolved bytes and the dead letters
exactly what the codec's full decode gives them, for any contact of any writer schema."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, ConfluentCodec, SingleObjectCodec
from streams.identity import IdentityGraph, to_millis
from streams.conversations import Stitcher
from streams.identity_stage import CONTACT_FIELDS, RESOLVED_FIELDS, ROUTE_FIELDS, ContactReader, ResolvedValues
from threadline.errors import DecodeError

from ..test_avro_writer import values
from ..test_codec import FakeRegistry

CID = "0c6f8a52-3f5e-5b7d-8e21-4d9a6b1c2e3f"
CONTACT_VERSIONS = schemas.versions(schemas.CONTACT)


def _body(parsed: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _frame(codec, sv, body: bytes) -> bytes:
    """``body`` framed as ``codec`` frames what ``sv`` wrote."""
    if isinstance(codec, SingleObjectCodec):
        return SINGLE_OBJECT_MAGIC + codec.fingerprint(sv.parsed) + body
    schema_id = codec.registry.register("contacts.v1-value", sv.text)
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + body


def _outcome(f):
    try:
        return f()
    except Exception as exc:  # the same failure, or the same answer
        return ("raised", type(exc).__name__, str(exc))


def _observed(record: dict):
    change = IdentityGraph({}).observe(record, gen=7)
    return change.customer_id, change.events, change.rekeyed, change.duplicate


def _drawn(data, codec, sv) -> bytes:
    """A framed contact of ``sv``: any values, identities the graph links often, times in the
    datetime range often and some that round or are out of it, now and then a byte changed."""
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    if data.draw(st.booleans()):  # identities the graph links, often
        record["identities"] = [
            {"kind": "email", "value": "a@example.it", "platform": None, "strength": "asserted", "primary": True},
            *record["identities"],
        ]
    for at in ("occurred_at", "recorded_at"):  # often times in the datetime range, some that round
        record[at] = data.draw(st.sampled_from([record[at], 542_506_294_550, 1, 0, -1]) | st.integers(1, 1 << 42))
    body = bytearray(_body(sv.parsed, record))
    if data.draw(st.integers(0, 9)) == 0 and body:  # now and then a body that may not decode
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    return _frame(codec, sv, bytes(body))


def _compared(reader: ContactReader, codec, raw: bytes, version: int) -> tuple[dict, dict, bool] | None:
    """What ``reader`` reads of ``raw`` beside the codec's full decode, checked: the same error
    (None), the whole record, or the reader's fields with the same values (its times the same
    milliseconds) when the frame is of today's schema; (read, full, complete)."""
    full = _outcome(lambda: codec.decode(raw).record)
    got = _outcome(lambda: reader.read(raw))
    if isinstance(full, tuple):  # not decodable: the reader raises the codec's own error
        assert got == full
        return None
    view, complete = got
    if complete:
        assert view == full
    else:
        fields = reader.fields
        assert set(view) == set(fields) and version == CONTACT_VERSIONS[-1].version
        assert {k: view[k] for k in fields if not k.endswith("_at")} == {
            k: full[k] for k in fields if not k.endswith("_at")
        }
        assert to_millis(view["occurred_at"]) == to_millis(full["occurred_at"])
        assert to_millis(view.get("recorded_at") or view["occurred_at"]) == to_millis(
            full.get("recorded_at") or full["occurred_at"]
        )
    return view, full, complete


@pytest.mark.parametrize("make", [lambda: ConfluentCodec(FakeRegistry()), SingleObjectCodec], ids=["confluent", "so"])
@pytest.mark.parametrize("sv", CONTACT_VERSIONS, ids=lambda sv: f"contact-v{sv.version}")
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_what_the_reader_gives_the_graph_and_the_resolved_topic_is_what_the_full_decode_gives(make, sv, data):
    codec = make()
    raw = _drawn(data, codec, sv)
    both = _compared(ContactReader(codec), codec, raw, sv.version)
    if both is None:
        return
    view, full, complete = both
    assert _outcome(lambda: _observed(view)) == _outcome(lambda: _observed(full))
    slow, fast = ResolvedValues(codec, "contacts.resolved.v1"), ResolvedValues(codec, "contacts.resolved.v1")
    for _ in range(2):  # the first: the long way (and the check of the header); the second patched
        assert _outcome(lambda: fast.value(raw, view, CID, complete)) == _outcome(lambda: slow.value(raw, full, CID))


def _route_check(record: dict) -> bool:
    """What the route stage asks of a contact it read (``RouteRunner.process``)."""
    if not record.get("identities"):
        raise ValueError("a contact without identities cannot be resolved")
    return True


def _stitched(record: dict):
    """What the conversations stage makes of a resolved contact it read: its customer, the clock's
    event time and the rules' state and events for it."""
    if not record.get("customer_id"):
        raise ValueError("a resolved contact without customer_id")
    new, events = Stitcher().apply(None, record, wm=542_506_294_550, gen=3)
    return record["customer_id"], to_millis(record["occurred_at"]), record["event_id"], new, events


@pytest.mark.parametrize("make", [lambda: ConfluentCodec(FakeRegistry()), SingleObjectCodec], ids=["confluent", "so"])
@pytest.mark.parametrize("sv", CONTACT_VERSIONS, ids=lambda sv: f"contact-v{sv.version}")
@pytest.mark.parametrize(
    ("fields", "use"), [(ROUTE_FIELDS, _route_check), (RESOLVED_FIELDS, _stitched)], ids=["route", "conversations"]
)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_what_the_route_and_conversations_stages_read_gives_what_the_full_decode_gives(make, sv, fields, use, data):
    """The route stage's check and the conversations stage's rules on the fields their readers
    read: the same answer, the same events and state, or the same error (the dead letter's
    reason) as on the codec's full decode, for any contact of any writer schema."""
    codec = make()
    raw, version = _drawn(data, codec, sv), sv.version
    if data.draw(st.booleans()):  # a resolved contact: a customer id, often (written with today's schema)
        full = _outcome(lambda: codec.decode(raw).record)
        if not isinstance(full, tuple):
            raw = codec.encode("contacts.resolved.v1", schemas.CONTACT, {**full, "customer_id": CID})
            version = CONTACT_VERSIONS[-1].version
    both = _compared(ContactReader(codec, fields), codec, raw, version)
    if both is None:
        return
    view, full, _complete = both
    assert _outcome(lambda: use(view)) == _outcome(lambda: use(full))


@pytest.mark.parametrize("fields", [CONTACT_FIELDS, ROUTE_FIELDS, RESOLVED_FIELDS], ids=["identity", "route", "conv"])
def test_a_contact_of_the_current_schema_is_read_without_decoding_the_rest(full_contact, fields):
    from connectors.contact import to_record

    from ..conftest import RECORDED_AT

    codec = SingleObjectCodec()
    record = {**to_record(full_contact, RECORDED_AT), "customer_id": CID}
    raw = codec.encode("contacts.resolved.v1", schemas.CONTACT, record)
    view, complete = ContactReader(codec, fields).read(raw)
    assert not complete and set(view) == set(fields)
    assert view["occurred_at"] == to_millis(codec.decode(raw).record["occurred_at"])


def test_a_decoded_time_gives_the_graph_and_the_rules_its_own_milliseconds():
    """``to_millis`` of the datetime the codec decodes a ``timestamp-millis`` into is that long,
    for every value: a float timestamp times 1000 was one millisecond short for ~0.6% of them, so
    identity and conversation events carried times a millisecond before their contact's."""
    sv = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
        }
    )
    rng = random.Random(5)
    samples = [rng.randrange(1, 253_402_300_799_999) for _ in range(20_000)] + [1, 2, 999, 253_402_300_799_999]
    samples += [1_796_056_502_123 + i for i in range(2_000)]  # this decade's times
    for ms in samples:
        dt = fastavro.schemaless_reader(io.BytesIO(_body(sv, {"t": ms})), sv, None)["t"]
        assert to_millis(dt) == ms, (ms, dt)
    assert to_millis(datetime(2026, 11, 30, 12, 0, 0, 123_999)) == to_millis(
        datetime(2026, 11, 30, 12, 0, 0, 123_000, tzinfo=UTC)
    )


@pytest.mark.parametrize("make", [lambda: ConfluentCodec(FakeRegistry()), SingleObjectCodec], ids=["confluent", "so"])
def test_frames_of_no_known_schema_are_decoded_the_long_way_and_not_remembered(make, full_contact):
    """Whatever reaches the graph topic, the reader keeps one entry per header of a known schema:
    garbage with headers of every kind gets the codec's error and leaves nothing behind."""
    from connectors.contact import to_record

    from ..conftest import RECORDED_AT

    codec = make()
    reader = ContactReader(codec)
    good = codec.encode("contacts.v1", schemas.CONTACT, to_record(full_contact, RECORDED_AT))
    rng = random.Random(11)
    for i in range(50):
        junk = bytes([0]) + rng.randbytes(4) + good[5:] if i % 2 else SINGLE_OBJECT_MAGIC + rng.randbytes(8) + good[10:]
        with pytest.raises(DecodeError):
            reader.read(junk)
    assert reader.read(good)[1] is False and len(reader.readers) == 1
