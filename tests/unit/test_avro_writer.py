"""schemas.avro_writer: the bytes fastavro writes, for every version of every schema it compiles,
on records drawn from the schemas themselves; what it does not compile stays with fastavro; an
invalid record is refused as fastavro refuses it."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from connectors.contact import ContactIn, to_record
from schemas.avro_writer import Unsupported, compile_writer
from schemas.codec import SingleObjectCodec, _compiled
from threadline.errors import SchemaError

from .conftest import RECORDED_AT, full_contact_payload

VERSIONS = [sv for subject in schemas.subjects() for sv in schemas.versions(subject)]
COMPILED = [sv for sv in VERSIONS if _compiled(sv.parsed) is not None]

TEXT = st.text(max_size=12)
LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(min_value=0, max_value=2000)
TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 31), timezones=st.just(timezone(timedelta(hours=2)))
)


def values(schema, named):
    """A strategy for the values of ``schema`` (parsed by fastavro)."""
    if isinstance(schema, str):
        prim = {"null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1), "long": LONG}
        prim |= {"string": TEXT, "bytes": st.binary(max_size=12)}
        return prim[schema] if schema in prim else st.deferred(lambda: named[schema])
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named) for branch in schema))
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return TIMES | LONG
    if kind == "record":
        fields = {f["name"]: values(f["type"], named) for f in schema["fields"]}
        named[schema["name"]] = strategy = st.fixed_dictionaries(fields)
        return strategy
    if kind == "enum":
        named[schema["name"]] = strategy = st.sampled_from(schema["symbols"])
        return strategy
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(TEXT, values(schema["values"], named), max_size=3)
    return values(kind, named)


def fastavro_bytes(parsed, record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def test_the_schemas_the_project_writes_most_are_compiled():
    names = {sv.parsed["name"] for sv in COMPILED}
    assert {"threadline.contact.Contact", "threadline.conversation.ConversationEvent"} <= names


@pytest.mark.parametrize("sv", COMPILED, ids=lambda sv: f"{sv.parsed['name']}-v{sv.version}")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_compiled_writer_writes_what_fastavro_writes(sv, data):
    record = data.draw(values(sv.parsed, {}))
    assert compile_writer(sv.parsed)(record) == fastavro_bytes(sv.parsed, record)


def test_a_contact_record_encodes_to_fastavros_bytes_and_decodes_back():
    record = to_record(ContactIn.model_validate(full_contact_payload()), RECORDED_AT)
    parsed = schemas.latest(schemas.CONTACT).parsed
    assert compile_writer(parsed)(record) == fastavro_bytes(parsed, record)
    codec = SingleObjectCodec()
    assert codec.decode(codec.encode("contacts.v1", schemas.CONTACT, record)).record == record


def test_missing_fields_take_their_defaults_or_are_refused_as_fastavro_does():
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [
                {"name": "a", "type": "long"},
                {"name": "b", "type": ["null", "string"]},
                {"name": "c", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}, "default": "y"},
                {"name": "d", "type": {"type": "array", "items": "string"}, "default": []},
            ],
        }
    )
    write = compile_writer(schema)
    assert write({"a": 5}) == fastavro_bytes(schema, {"a": 5})
    for bad in ({"b": None}, {"a": "5"}, {"a": 2**63}, {"a": 1, "c": "z"}, {"a": 1, "b": 3}):
        with pytest.raises(Exception) as ours:
            write(bad)
        with pytest.raises(Exception) as theirs:
            fastavro_bytes(schema, bad)
        caught = (ValueError, TypeError, KeyError, AttributeError)  # what the codec turns into SchemaError
        assert isinstance(ours.value, caught) == isinstance(theirs.value, caught), (bad, ours.value, theirs.value)


def test_a_record_that_does_not_match_is_a_schema_error_from_the_codec():
    record = to_record(ContactIn.model_validate(full_contact_payload()), RECORDED_AT)
    record["channel"] = "carrier-pigeon"
    with pytest.raises(SchemaError):
        SingleObjectCodec().encode("contacts.v1", schemas.CONTACT, record)


@pytest.mark.parametrize(
    "schema",
    ["double", ["string", "null"], ["null", "string", "long"], {"type": "fixed", "name": "F", "size": 4}],
)
def test_what_it_does_not_compile_is_left_to_fastavro(schema):
    with pytest.raises(Unsupported):
        compile_writer(
            fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": schema}]})
        )
