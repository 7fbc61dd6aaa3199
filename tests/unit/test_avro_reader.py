"""schemas/avro_reader.py: a projection reads the wanted fields as fastavro reads them (logical
types left as their underlying values) from any body of any schema of the contract, a full reader
reads the whole record as fastavro reads it (logical types applied), and what either does not read
whole it refuses (``Unreadable``) rather than read wrong."""

from __future__ import annotations

import io
import json

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas.avro_reader import Unreadable, compile_projection, compile_reader

from .test_avro_writer import ALL_VERSIONS, values


def _plain(schema):
    """The schema without its logical types (fastavro then reads their underlying values)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(x) for x in schema]
    return schema


def _write(parsed: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _read_plain(sv, body: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(_plain(json.loads(sv.text))), None)


def _mangled(data, body: bytearray, hows=("cut", "grow", "flip", "keep")) -> bytes:
    """The body cut short, grown, with a byte changed, or kept."""
    how = data.draw(st.sampled_from(hows))
    if how == "cut" and body:
        del body[data.draw(st.integers(0, len(body) - 1)) :]
    elif how == "grow":
        body += data.draw(st.binary(min_size=1, max_size=4))
    elif how == "flip" and body:
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    return bytes(body)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_projection_reads_the_wanted_fields_as_fastavro_reads_them(sv, data):
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    names = [f["name"] for f in sv.parsed["fields"]]
    wanted = data.draw(st.lists(st.sampled_from(names), unique=True))
    project = compile_projection(sv.parsed, wanted)
    assert project is not None
    body = _write(sv.parsed, record)
    full = _read_plain(sv, body)
    assert project(body) == {k: full[k] for k in names if k in wanted}
    assert project(b"\x00\x00\x00" + body, 3) == project(body)  # from an offset (after a frame's header)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_body_cut_grown_or_changed_is_refused_or_read_as_fastavro_reads_it(sv, data):
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    body = _mangled(data, bytearray(_write(sv.parsed, record)), ("cut", "grow", "flip"))
    names = [f["name"] for f in sv.parsed["fields"]]
    project = compile_projection(sv.parsed, names)
    assert project is not None
    try:
        got = project(body)
    except Unreadable:
        return
    assert got == _read_plain(sv, body)  # whatever it reads, it reads all of, as fastavro does


def test_skipped_fields_are_checked_as_fastavro_decodes_them():
    sv = schemas.latest(schemas.CONTACT)
    project = compile_projection(sv.parsed, ["event_id"])
    assert project is not None
    contact = {f["name"]: None for f in sv.parsed["fields"]}
    contact.update(
        event_id="e-1",
        event_type="contact.received",
        occurred_at=1,
        recorded_at=2,
        connector="c",
        channel="email",
        direction="inbound",
        actor={"role": "customer", "department": None, "id": None, "display_name": None},
        identities=[],
        text="caf\u00e9",
        attachments=[],
        thread={"message_id": None, "in_reply_to": None, "references": [], "reply_to_id": None},
        facts=[],
        consent=[],
        provider_id="p",
        metadata={},
    )
    contact["thread"].update(call_id=None, session_id=None)
    body = _write(sv.parsed, contact)
    assert project(body) == {"event_id": "e-1"}
    bad_utf8 = body.replace("caf\u00e9".encode(), b"caf\xff\xfe")
    with pytest.raises(Unreadable):
        project(bad_utf8)
    with pytest.raises(UnicodeDecodeError):
        fastavro.schemaless_reader(io.BytesIO(bad_utf8), sv.parsed, None)
    bad_enum = body.replace(b"\x02c\x00", b"\x02c\x7e", 1)  # the connector, then channel index 63
    with pytest.raises(Unreadable):
        project(bad_enum)


def test_what_it_cannot_read_it_does_not_compile():
    assert compile_projection({"type": "enum", "name": "E", "symbols": ["a"]}, []) is None
    sv = schemas.latest(schemas.CONTACT)
    assert compile_projection(sv.parsed, ["no_such_field"]) is None


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_full_reader_reads_a_record_as_fastavro_reads_it_or_refuses_it(sv, data):
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    read = compile_reader(sv.parsed)
    assert read is not None
    body = _write(sv.parsed, record)
    try:
        got = read(body)
    except Unreadable:  # a time beyond what a datetime holds: fastavro refuses it too
        with pytest.raises(OverflowError):
            fastavro.schemaless_reader(io.BytesIO(body), sv.parsed, None)
        return
    assert got == fastavro.schemaless_reader(io.BytesIO(body), sv.parsed, None)
    assert read(b"\x00\x00\x00" + body, 3) == got
    changed = _mangled(data, bytearray(body))
    try:
        got = read(changed)
    except Unreadable:
        return
    assert got == fastavro.schemaless_reader(io.BytesIO(changed), sv.parsed, None)


def test_a_full_reader_applies_timestamp_millis_as_fastavro_does():
    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
        }
    )
    read = compile_reader(parsed)
    assert read is not None
    for millis in (0, 1, -1, 1795334400374, -62135596800000, 253402300799999, 1_000_000_000_001):
        body = _write(parsed, {"at": millis})
        assert read(body) == fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
    beyond = _write(parsed, {"at": 253402300800000})  # past year 9999: fastavro cannot read it either
    with pytest.raises(Unreadable):
        read(beyond)
    with pytest.raises(OverflowError):
        fastavro.schemaless_reader(io.BytesIO(beyond), parsed, None)


def test_a_full_reader_leaves_a_boolean_byte_other_than_0_and_1_to_fastavro():
    parsed = fastavro.parse_schema({"type": "record", "name": "B", "fields": [{"name": "b", "type": "boolean"}]})
    read = compile_reader(parsed)
    assert read is not None and read(b"\x01") == {"b": True} and read(b"\x00") == {"b": False}
    with pytest.raises(Unreadable):
        read(b"\x02")


def test_a_full_reader_is_not_made_for_a_logical_type_it_does_not_apply():
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}
    parsed = fastavro.parse_schema({"type": "record", "name": "D", "fields": [{"name": "d", "type": decimal}]})
    assert compile_reader(parsed) is None
    assert compile_projection(parsed, ["d"]) is not None  # a projection leaves logical types unapplied


@pytest.mark.parametrize("first", [0x80, 0x81, 0xFF])
def test_a_ten_byte_long_keeps_its_low_64_bits_as_fastavro_reads_it(first):
    """A long's varint of ten bytes whose tenth has bits above its lowest (a value past 64 bits:
    a corrupt body, as the fuzzing above made one) reads as fastavro reads it, the low 64 bits
    kept, never as a number outside a long's range; one of eleven bytes is refused."""
    parsed = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})
    project, full = compile_projection(parsed, ["n"]), compile_reader(parsed)
    assert project is not None and full is not None
    for tenth in range(0x80):
        body = bytes([first] * 9 + [tenth])
        want = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
        assert project(body, 0) == want == full(body, 0), hex(tenth)
        assert -(2**63) <= want["n"] < 2**63
    with pytest.raises(Unreadable):
        project(bytes([first] * 10 + [0x01]), 0)
