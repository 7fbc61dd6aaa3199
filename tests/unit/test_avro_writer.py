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
from schemas.avro_writer import Fallback, RunsWriter, Unsupported, compile_fields, compile_writer
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


# -- runs of fields: compile_fields and RunsWriter ------------------------------------------------

CONVERSATION_RUNS = (
    ("customer_id", "conversation_id", "channel", "previous_channel", "contact_event_id", "waiting_on"),
    ("facts",),
    ("status", "opened_at", "messages", "breaches", "open_sla", "merged_into", "merged_into_customer_id"),
)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=lambda sv: f"{sv.subject}-v{sv.version}")
@settings(max_examples=30, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=4))
def test_consecutive_runs_of_fields_written_in_turn_are_the_records_bytes(sv, data, cuts):
    record = data.draw(values(sv.parsed, sv.parsed["__named_schemas"]))
    names = [f["name"] for f in sv.parsed["fields"]]
    bounds = sorted({0, len(names), *(c % len(names) for c in cuts)})
    out = bytearray()
    try:
        for a, b in zip(bounds, bounds[1:]):
            write = compile_fields(sv.parsed, names[a:b])
            assert write is not None
            write(record, out)
    except Fallback:
        return
    assert bytes(out) == _fastavro(sv.parsed, record)


def test_fields_that_are_not_consecutive_do_not_compile():
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    assert compile_fields(sv.parsed, ["event_id", "occurred_at"]) is None
    assert compile_fields(sv.parsed, ["no_such_field"]) is None
    with pytest.raises(Unsupported):
        RunsWriter(sv.parsed, [("event_id", "event_type"), ("event_type", "occurred_at")])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_runs_writer_writes_each_record_as_fastavro_does(data):
    """Events of one change sharing some objects (the facts, the snapshot) and not others, in any
    mix: every record's bytes are its own, whatever the record before it held."""
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    named = sv.parsed["__named_schemas"]
    first = data.draw(values(sv.parsed, named))
    events = [first]
    for _ in range(data.draw(st.integers(min_value=0, max_value=5))):
        fresh = data.draw(values(sv.parsed, named))
        keep = data.draw(st.sets(st.sampled_from([f["name"] for f in sv.parsed["fields"]])))
        events.append({k: (events[-1][k] if k in keep else fresh[k]) for k in fresh})
    got = RunsWriter(sv.parsed, CONVERSATION_RUNS).write_all(events)
    for event, body in zip(events, got, strict=True):
        try:
            expected = compile_writer(sv.parsed)(event)
        except Fallback:
            assert body is None
            continue
        assert body == expected == _fastavro(sv.parsed, event)


def test_equal_values_of_other_types_are_not_taken_for_the_previous_records():
    """``1`` and ``True`` are equal and hash alike: a run is reused only for the very same objects
    (with equality, the second record would have been written with the first's bytes)."""
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    a = _conversation_event()
    a["recorded_at"] = 1
    b = {**a, "messages": True, "facts": [dict(f) for f in a["facts"]]}
    first, second = RunsWriter(sv.parsed, CONVERSATION_RUNS).write_all([a, b])
    assert first == _fastavro(sv.parsed, a)
    assert second is None  # a bool for a long: fastavro's to write (or refuse)
    c = {**a, "open_sla": {**a["open_sla"], "due_at": 3}}  # an equal-shaped but other dict
    assert RunsWriter(sv.parsed, CONVERSATION_RUNS).write_all([a, c])[1] == _fastavro(sv.parsed, c)


def test_a_record_the_runs_writer_does_not_take_is_none_and_the_next_is_written():
    sv = schemas.latest(schemas.CONVERSATION_EVENT)
    a = {**_conversation_event(), "recorded_at": 5}
    bad = {**a, "version": 1.5}
    good = {**a, "version": 3}
    assert RunsWriter(sv.parsed, CONVERSATION_RUNS).write_all([a, bad, good, "not a dict"]) == [
        _fastavro(sv.parsed, a),
        None,
        _fastavro(sv.parsed, good),
        None,
    ]
