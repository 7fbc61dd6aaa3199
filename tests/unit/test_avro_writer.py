"""schemas/avro_writer.py: the compiled writer gives fastavro's bytes for every schema of the
contract, hands what it does not take back to fastavro, and is what the codec encodes with."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas import codec as codec_module
from schemas.avro_writer import Fallback, compile_writer
from threadline.errors import SchemaError

ALL_VERSIONS = [sv for subject in schemas.subjects() for sv in schemas.versions(subject)]
_LONGS = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone(timedelta(hours=-5)))
)


def _fastavro(parsed: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def values(schema, named: dict, depth: int = 0) -> st.SearchStrategy:
    """Values of an Avro schema (parsed by fastavro), the shapes the project writes."""
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named, depth)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1),
            "long": _LONGS,
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=80),
            "string": st.text(max_size=80),
        }[schema]
    if isinstance(schema, list):
        return st.one_of(*(values(b, named, depth) for b in schema))
    kind, logical = schema["type"], schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _LONGS.filter(lambda n: abs(n) < 1 << 53) | _TIMES
    if kind == "record":
        fields = {f["name"]: values(f["type"], named, depth + 1) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"], named, depth + 1), max_size=4 if depth < 3 else 0)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), values(schema["values"], named, depth + 1), max_size=3)
    return values(kind, named, depth)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
def test_every_schema_of_the_contract_compiles(sv):
    assert compile_writer(sv.parsed) is not None


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_compiled_writer_writes_fastavros_bytes(sv, data):
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    write = compile_writer(sv.parsed)
    try:
        got = write(record)
    except Fallback:
        return  # left to fastavro; the codec's path for these is tested below
    assert got == _fastavro(sv.parsed, record)


def _conversation_event() -> dict:
    return {
        "event_id": "e-1",
        "event_type": "opened",
        "occurred_at": 1_795_334_401_590,
        "recorded_at": datetime(2026, 11, 30, 7, 0, 0, 123456, tzinfo=UTC),
        "customer_id": "c-1",
        "conversation_id": "v-1",
        "channel": "sms",
        "previous_channel": None,
        "contact_event_id": "x" * 200,  # a string of more than one length byte
        "waiting_on": "agent",
        "sla": None,
        "facts": [{"kind": "language", "value": "nl", "source": None}],
        "version": 1,
        "status": "open",
        "opened_at": 1_795_334_401_590,
        "messages": 1,
        "breaches": 0,
        "open_sla": {
            "kind": "first_response",
            "target_seconds": 900,
            "started_at": 1,
            "due_at": 2,
            "elapsed_seconds": None,
            "state": "running",
        },
        "merged_into": None,
        "merged_into_customer_id": None,
    }


def test_the_codec_encodes_with_the_compiled_writer(monkeypatch):
    """fastavro's writer is not called for a record the compiled writer takes (before: it was,
    for every record)."""
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    event = _conversation_event()
    expected = _fastavro(sv.parsed, event)

    def refuse(*_a, **_k):
        raise AssertionError("fastavro's schemaless_writer called")

    monkeypatch.setattr(codec_module.fastavro, "schemaless_writer", refuse)
    assert codec_module._write(sv.parsed, event) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"version": 1.5},  # a float for a long
        {"channel": 7},  # an int for a string
        {"waiting_on": "robot"},  # not a symbol of the enum
        {"facts": "nl"},  # a string for an array
        {"recorded_at": datetime(2026, 1, 1)},  # a naive datetime
    ],
)
def test_what_the_compiled_writer_does_not_take_goes_to_fastavro(change):
    """Whatever fastavro answers for such a value (bytes or its error) is the codec's answer."""
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    event = {**_conversation_event(), **change}
    with pytest.raises(Fallback):
        compile_writer(sv.parsed)(event)
    try:
        expected: bytes | type[Exception] = _fastavro(sv.parsed, event)
    except (ValueError, TypeError, KeyError, AttributeError):
        expected = SchemaError
    if expected is SchemaError:
        with pytest.raises(SchemaError):
            codec_module._write(sv.parsed, event)
    else:
        assert codec_module._write(sv.parsed, event) == expected


def test_a_missing_field_with_a_default_is_filled_by_fastavro():
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    event = _conversation_event()
    del event["merged_into"]  # default null
    assert codec_module._write(sv.parsed, event) == _fastavro(sv.parsed, {**event, "merged_into": None})


def test_a_union_of_two_types_is_left_to_fastavro():
    parsed = fastavro.parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["null", "string", "long"]}]}
    )
    assert compile_writer(parsed) is None
    assert codec_module._write(parsed, {"x": 5}) == _fastavro(parsed, {"x": 5})
