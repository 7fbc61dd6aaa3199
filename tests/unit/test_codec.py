"""schemas/codec.py: both framings, their failure modes, and reading older writers."""

from __future__ import annotations

import copy
import io
import json
import struct

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from connectors.contact import to_record
from schemas.codec import ConfluentCodec, Decoded, SingleObjectCodec
from threadline.errors import DecodeError, SchemaError

from .conftest import RECORDED_AT

TOPIC = "contacts.v1"
CONTACT_FULLNAME = "threadline.contact.Contact"


_SINGLE = SingleObjectCodec()  # module-wide: hypothesis tests cannot take function fixtures


@pytest.fixture
def single() -> SingleObjectCodec:
    return _SINGLE


@pytest.fixture
def record(full_contact) -> dict:
    return to_record(full_contact, RECORDED_AT)


# --- CRC-64-AVRO, written from the Avro specification, independent of fastavro ---------------

_EMPTY64 = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY64 & -(_fp & 1))
    _TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def spec_fingerprint(parsed) -> bytes:
    """Single-object encoding: the 64-bit fingerprint of the canonical form, little-endian."""
    return struct.pack("<Q", crc64_avro(to_parsing_canonical_form(parsed).encode()))


def test_fingerprint_of_null_is_the_avro_spec_test_vector():
    null = fastavro.parse_schema("null")
    assert spec_fingerprint(null).hex() == "8a8f25cce724dd63"  # the test itself is right ...
    assert SingleObjectCodec.fingerprint(null) == bytes.fromhex("8a8f25cce724dd63")  # ... and the codec


def test_single_object_frame_is_c3_01_then_the_writer_fingerprint_then_the_body(single, record):
    frame = single.encode(TOPIC, schemas.CONTACT, record)
    latest = schemas.latest(schemas.CONTACT).parsed
    assert frame[:2] == b"\xc3\x01"
    assert frame[2:10] == spec_fingerprint(latest)
    assert fastavro.schemaless_reader(io.BytesIO(frame[10:]), latest, None) == record


def test_single_object_round_trip_of_a_full_contact(single, record):
    decoded = single.decode(single.encode(TOPIC, schemas.CONTACT, record))
    assert decoded == Decoded(CONTACT_FULLNAME, record)
    assert decoded.record["identities"][1]["primary"] is True
    assert decoded.record["facts"] == [{"kind": "order_number", "value": "4711", "source": "text"}]


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01", b"\xc3\x01\x00\x00", b"\x00\x00\x00\x00\x01abc", b'{"event_id": "x"}', b"\xff" * 64],
    ids=repr,
)
def test_single_object_rejects_what_is_not_a_frame_with_decode_error(single, data):
    with pytest.raises(DecodeError):
        single.decode(data)


def test_single_object_rejects_an_unknown_fingerprint(single, record):
    frame = single.encode(TOPIC, schemas.CONTACT, record)
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        single.decode(frame[:2] + b"\x00" * 8 + frame[10:])


def test_every_truncation_of_a_frame_raises_decode_error(single, record):
    frame = single.encode(TOPIC, schemas.CONTACT, record)
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            single.decode(frame[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_single_object_decode_never_raises_anything_but_decode_error(garbage):
    try:
        out = _SINGLE.decode(garbage)
    except DecodeError as exc:
        assert exc.reason
    else:
        assert isinstance(out, Decoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_a_known_fingerprint_raises_only_decode_error(body):
    header = b"\xc3\x01" + SingleObjectCodec.fingerprint(schemas.latest(schemas.CONTACT).parsed)
    try:
        out = _SINGLE.decode(header + body)
    except DecodeError as exc:
        assert exc.reason
    else:
        assert out.schema_fullname == CONTACT_FULLNAME


@pytest.mark.parametrize("field", ["provider_id", "event_id", "actor", "occurred_at"])
def test_a_record_missing_a_required_field_raises_schema_error_on_encode(single, record, field):
    del record[field]
    with pytest.raises(SchemaError, match=field):
        single.encode(TOPIC, schemas.CONTACT, record)


def test_a_record_with_an_unknown_channel_raises_schema_error_on_encode(single, record):
    record["channel"] = "carrier_pigeon"
    with pytest.raises(SchemaError):
        single.encode(TOPIC, schemas.CONTACT, record)


# --- Confluent wire format with an in-memory registry -----------------------------------------


class FakeRegistry:
    """The two calls ConfluentCodec makes, kept in memory. Ids start high so byte order shows."""

    def __init__(self, first_id: int = 0x01020304):
        self.next_id = first_id
        self.by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, text: str) -> int:
        for schema_id in self.subjects.get(subject, []):
            if self.by_id[schema_id] == text:
                return schema_id
        schema_id, self.next_id = self.next_id, self.next_id + 1
        self.by_id[schema_id] = text
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return self.by_id[schema_id]
        except KeyError:  # what RegistryClient raises on the registry's 404
            raise SchemaError(f"schema {schema_id} not found") from None


def test_confluent_frame_is_zero_then_big_endian_schema_id_then_the_body(record):
    registry = FakeRegistry()
    frame = ConfluentCodec(registry).encode(TOPIC, schemas.CONTACT, record)
    assert list(registry.subjects) == ["contacts.v1-value"]  # topic-name strategy
    (schema_id,) = registry.subjects["contacts.v1-value"]
    assert frame[:5] == b"\x00\x01\x02\x03\x04" and schema_id == 0x01020304
    assert json.loads(registry.by_id[schema_id]) == schemas.latest(schemas.CONTACT).raw
    body = fastavro.schemaless_reader(io.BytesIO(frame[5:]), schemas.latest(schemas.CONTACT).parsed, None)
    assert body == record


def test_confluent_encode_registers_once_per_topic_and_subject(record):
    registry = FakeRegistry()
    codec = ConfluentCodec(registry)
    frames = [codec.encode(TOPIC, schemas.CONTACT, record) for _ in range(3)]
    assert len(registry.by_id) == 1 and len(set(frames)) == 1


def test_confluent_round_trip_in_the_same_codec(record):
    codec = ConfluentCodec(FakeRegistry())
    assert codec.decode(codec.encode(TOPIC, schemas.CONTACT, record)) == Decoded(CONTACT_FULLNAME, record)


def test_confluent_decode_in_another_process_fetches_the_writer_from_the_registry(record):
    registry = FakeRegistry()
    frame = ConfluentCodec(registry).encode(TOPIC, schemas.CONTACT, record)
    assert ConfluentCodec(registry).decode(frame) == Decoded(CONTACT_FULLNAME, record)


@pytest.mark.parametrize(
    "data", [b"", b"\x00\x00\x00", b"\x01\x00\x00\x00\x01body", b"\xc3\x01" + b"\x00" * 12], ids=repr
)
def test_confluent_rejects_a_wrong_magic_byte_or_short_frame_with_decode_error(data):
    with pytest.raises(DecodeError):
        ConfluentCodec(FakeRegistry()).decode(data)


def test_confluent_rejects_an_unknown_schema_id_with_decode_error(record):
    frame = ConfluentCodec(FakeRegistry()).encode(TOPIC, schemas.CONTACT, record)
    with pytest.raises(DecodeError, match="unknown schema id"):
        ConfluentCodec(FakeRegistry(first_id=7)).decode(frame)


def test_confluent_rejects_a_corrupt_body_with_decode_error(record):
    codec = ConfluentCodec(FakeRegistry())
    frame = codec.encode(TOPIC, schemas.CONTACT, record)
    with pytest.raises(DecodeError):
        codec.decode(frame[:5] + b"\xff" * 10)


def test_a_record_from_an_older_writer_decodes_into_todays_shape_with_defaults(record):
    older = copy.deepcopy(schemas.latest(schemas.CONTACT).raw)
    older["fields"] = [f for f in older["fields"] if f["name"] not in ("customer_id", "event_type")]
    old_record = {k: v for k, v in record.items() if k not in ("customer_id", "event_type")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(older), old_record)

    registry = FakeRegistry()
    old_id = registry.register("contacts.v1-value", json.dumps(older))
    frame = b"\x00" + struct.pack(">I", old_id) + body.getvalue()

    decoded = ConfluentCodec(registry).decode(frame)
    assert decoded.schema_fullname == CONTACT_FULLNAME
    assert decoded.record["customer_id"] is None
    assert decoded.record["event_type"] == "contact.received"  # the reader's default, not absent
    assert decoded.record == record


# --- the read plan: direct when the writer is today's reader, resolved for an older writer ---


@pytest.fixture
def reads(monkeypatch) -> list:
    """Every fastavro read the codec makes, as (writer schema, reader schema)."""
    seen = []
    real = fastavro.schemaless_reader

    def spy(fo, writer, reader=None, *args, **kwargs):
        seen.append((writer, reader))
        return real(fo, writer, reader, *args, **kwargs)

    monkeypatch.setattr("schemas.codec.fastavro.schemaless_reader", spy)
    return seen


def test_a_writer_equal_to_the_reader_is_read_directly_with_no_resolution(record, reads):
    registry = FakeRegistry()
    frame = ConfluentCodec(registry).encode(TOPIC, schemas.CONTACT, record)
    fresh = ConfluentCodec(registry)  # another process: the writer comes from the registry's text
    (schema_id,) = struct.unpack(">I", frame[1:5])
    plan = fresh.plan(schema_id)
    latest = schemas.latest(schemas.CONTACT).parsed
    assert plan.direct and plan.schema is latest  # the reader's own parsed schema, parsed once
    assert plan.compiled is not None  # read by the schema's compiled reader (schemas.avro_reader)
    assert fresh.decode(frame) == Decoded(CONTACT_FULLNAME, record)
    assert reads == []  # fastavro not asked


def test_a_body_the_compiled_reader_refuses_is_fastavros_to_answer(record, reads):
    registry = FakeRegistry()
    frame = ConfluentCodec(registry).encode(TOPIC, schemas.CONTACT, record)
    latest = schemas.latest(schemas.CONTACT).parsed
    # bytes after the record: fastavro reads the record and ignores them, the compiled reader refuses
    assert ConfluentCodec(registry).decode(frame + b"\x00") == Decoded(CONTACT_FULLNAME, record)
    assert reads == [(latest, None)]
    with pytest.raises(DecodeError):  # cut short: fastavro's error is the answer
        ConfluentCodec(registry).decode(frame[:-3])
    assert len(reads) == 2


def test_the_plan_of_a_schema_id_is_made_once(record, monkeypatch):
    registry = FakeRegistry()
    frame = ConfluentCodec(registry).encode(TOPIC, schemas.CONTACT, record)
    fresh = ConfluentCodec(registry)
    calls = []
    monkeypatch.setattr(registry, "schema_by_id", lambda i, real=registry.schema_by_id: calls.append(i) or real(i))
    for _ in range(3):
        assert fresh.decode(frame).record == record
    assert len(calls) == 1


def test_an_older_writer_is_still_resolved_to_the_reader(record, reads):
    older = copy.deepcopy(schemas.latest(schemas.CONTACT).raw)
    older["fields"] = [f for f in older["fields"] if f["name"] not in ("customer_id", "event_type")]
    old_record = {k: v for k, v in record.items() if k not in ("customer_id", "event_type")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(older), old_record)
    registry = FakeRegistry()
    old_id = registry.register("contacts.v1-value", json.dumps(older))
    codec = ConfluentCodec(registry)

    assert not codec.plan(old_id).direct
    decoded = codec.decode(b"\x00" + struct.pack(">I", old_id) + body.getvalue())
    assert decoded.record == {**record, "customer_id": None, "event_type": "contact.received"}
    ((writer, reader),) = reads
    assert reader is schemas.latest(schemas.CONTACT).parsed
    assert to_parsing_canonical_form(writer) != to_parsing_canonical_form(reader)


def test_single_object_reads_the_latest_directly_and_resolves_older_versions():
    from schemas.codec import read_plan

    for subject in schemas.subjects():
        *older, latest = schemas.versions(subject)
        assert read_plan(latest.fullname, latest.parsed).direct
        for sv in older:
            same = to_parsing_canonical_form(sv.parsed) == to_parsing_canonical_form(latest.parsed)
            assert read_plan(sv.fullname, sv.parsed).direct is same
