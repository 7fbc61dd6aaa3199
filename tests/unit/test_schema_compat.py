"""schemas/compat.py: the Avro resolution rules, cross-checked against fastavro's reader."""

from __future__ import annotations

import copy
import io
import itertools

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.compat import PRIMITIVES, backward_transitive_problems, incompatibilities

BASE = {
    "type": "record",
    "name": "Customer",
    "namespace": "test.compat",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "visits", "type": "int"},
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["bronze", "silver", "gold"]}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "email", "type": "string"},
    ],
}
BASE_RECORD = {"id": "c1", "visits": 3, "tier": "gold", "note": "vip", "email": "a@example.it"}


def evolve(change) -> dict:
    schema = copy.deepcopy(BASE)
    change(schema)
    return schema


def field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def fastavro_reads(writer: dict, reader: dict, record: dict) -> dict:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


def _add_field_with_default(s):
    s["fields"].append({"name": "language", "type": "string", "default": "en"})


def _add_enum_symbol(s):
    field(s, "tier")["type"]["symbols"].append("platinum")


def _int_to_long(s):
    field(s, "visits")["type"] = "long"


def _widen_union(s):
    field(s, "note")["type"] = ["null", "string", "long"]


def _rename_field_with_alias(s):
    f = field(s, "email")
    f["name"], f["aliases"] = "email_address", ["email"]


def _rename_record_with_alias(s):
    s["name"], s["aliases"] = "Client", ["Customer"]


def _string_to_bytes(s):
    field(s, "id")["type"] = "bytes"


def _remove_field(s):
    s["fields"] = [f for f in s["fields"] if f["name"] != "note"]


COMPATIBLE = {
    "add a field with a default": _add_field_with_default,
    "add an enum symbol": _add_enum_symbol,
    "promote int to long": _int_to_long,
    "widen a union": _widen_union,
    "rename a field keeping the old name as alias": _rename_field_with_alias,
    "rename the record keeping the old name as alias": _rename_record_with_alias,
    "promote string to bytes": _string_to_bytes,
    "remove a field": _remove_field,
}


def _add_field_without_default(s):
    s["fields"].append({"name": "language", "type": "string"})


def _remove_enum_symbol(s):
    field(s, "tier")["type"]["symbols"].remove("gold")


def _string_to_int(s):
    field(s, "id")["type"] = "int"


def _rename_record(s):
    s["name"] = "Client"


def _narrow_union(s):
    field(s, "note")["type"] = "null"


def _rename_field_without_alias(s):
    field(s, "email")["name"] = "email_address"


INCOMPATIBLE = {
    "add a field without a default": (_add_field_without_default, "language"),
    "remove an enum symbol, reader without default": (_remove_enum_symbol, "tier"),
    "change string to int": (_string_to_int, "id"),
    "rename the record without an alias": (_rename_record, "Client"),
    "narrow a union": (_narrow_union, "note"),
    "rename a field without an alias": (_rename_field_without_alias, "email_address"),
}


@pytest.mark.parametrize("change", COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_compatible_evolution_reports_no_problem(change):
    assert incompatibilities(evolve(change), BASE) == []


@pytest.mark.parametrize("change", COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_fastavro_reads_old_data_with_a_reader_the_checker_accepts(change):
    reader = evolve(change)
    assert incompatibilities(reader, BASE) == []
    out = fastavro_reads(BASE, reader, BASE_RECORD)
    assert out["visits"] == 3
    assert out["tier"] == "gold"


def test_added_field_default_and_alias_rename_are_what_fastavro_fills_in():
    def change(s):
        _add_field_with_default(s)
        _rename_field_with_alias(s)

    reader = evolve(change)
    assert incompatibilities(reader, BASE) == []
    out = fastavro_reads(BASE, reader, BASE_RECORD)
    assert out["language"] == "en"
    assert out["email_address"] == "a@example.it"


@pytest.mark.parametrize("change,named", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_incompatible_evolution_is_reported_naming_the_culprit(change, named):
    problems = incompatibilities(evolve(change), BASE)
    assert problems, "the checker accepted an incompatible change"
    assert any(named in p for p in problems), problems


def test_removing_an_enum_symbol_is_fine_when_the_reader_enum_has_a_default():
    def change(s):
        enum = field(s, "tier")["type"]
        enum["symbols"] = ["bronze", "silver", "unknown"]
        enum["default"] = "unknown"

    reader = evolve(change)
    assert incompatibilities(reader, BASE) == []
    assert fastavro_reads(BASE, reader, BASE_RECORD)["tier"] == "unknown"


def test_narrowing_a_union_is_caught_and_fastavro_indeed_fails_on_that_data():
    writer = evolve(_widen_union)  # ["null", "string", "long"]
    reader = BASE  # ["null", "string"]
    assert incompatibilities(reader, writer)
    with pytest.raises(Exception):
        fastavro_reads(writer, reader, dict(BASE_RECORD, note=42))


def test_a_writer_union_is_readable_when_every_branch_is():
    writer = {"type": "record", "name": "R", "fields": [{"name": "f", "type": ["int", "string"]}]}
    reader = {"type": "record", "name": "R", "fields": [{"name": "f", "type": ["null", "long", "string"]}]}
    assert incompatibilities(reader, writer) == []
    assert fastavro_reads(writer, reader, {"f": 5}) == {"f": 5}


def test_nested_records_arrays_and_maps_are_checked_inside():
    def nested(item_type, value_type):
        return {
            "type": "record",
            "name": "R",
            "fields": [
                {
                    "name": "items",
                    "type": {
                        "type": "array",
                        "items": {"type": "record", "name": "Item", "fields": [{"name": "n", "type": item_type}]},
                    },
                },
                {"name": "tags", "type": {"type": "map", "values": value_type}},
            ],
        }

    assert incompatibilities(nested("long", "string"), nested("int", "string")) == []
    problems = incompatibilities(nested("int", "string"), nested("string", "int"))
    assert len(problems) == 2
    assert any("items" in p for p in problems) and any("tags" in p for p in problems)


def test_a_named_type_referenced_again_by_name_is_resolved():
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "t",
        "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
            {"name": "b", "type": "E"},
        ],
    }
    narrowed = copy.deepcopy(schema)
    narrowed["fields"][0]["type"]["symbols"] = ["x"]
    assert incompatibilities(schema, schema) == []
    assert incompatibilities(narrowed, schema)


def test_a_named_type_referenced_by_its_inherited_full_name_is_resolved():
    # Valid Avro: E is defined inside namespace t, so "t.E" names it (fastavro accepts this).
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "t",
        "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
            {"name": "b", "type": "t.E"},
        ],
    }
    fastavro.parse_schema(schema)
    assert incompatibilities(schema, schema) == []


def test_a_recursive_schema_is_checked_without_endless_recursion():
    node = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "value", "type": "int"},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    }
    fastavro.parse_schema(node)
    assert incompatibilities(node, node) == []


SAMPLE = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 7,
    "float": 1.5,
    "double": 1.5,
    "bytes": b"ab",
    "string": "ab",
}


@given(st.sampled_from(sorted(itertools.product(sorted(PRIMITIVES), repeat=2))))
def test_checker_and_fastavro_agree_on_every_primitive_pair(pair):
    writer_type, reader_type = pair
    writer = {"type": "record", "name": "R", "fields": [{"name": "f", "type": writer_type}]}
    reader = {"type": "record", "name": "R", "fields": [{"name": "f", "type": reader_type}]}
    try:
        fastavro_reads(writer, reader, {"f": SAMPLE[writer_type]})
        fastavro_ok = True
    except Exception:
        fastavro_ok = False
    assert (incompatibilities(reader, writer) == []) is fastavro_ok


@given(st.lists(st.sampled_from(["string", "long", "boolean", "double"]), min_size=1, max_size=5))
def test_adding_any_fields_with_defaults_stays_readable(new_types):
    defaults = {"string": "", "long": 0, "boolean": False, "double": 0.0}
    reader = copy.deepcopy(BASE)
    for i, t in enumerate(new_types):
        reader["fields"].append({"name": f"added_{i}", "type": t, "default": defaults[t]})
    assert incompatibilities(reader, BASE) == []
    out = fastavro_reads(BASE, reader, BASE_RECORD)
    assert all(out[f"added_{i}"] == defaults[t] for i, t in enumerate(new_types))


def test_backward_transitive_accepts_a_history_of_compatible_steps():
    v2 = evolve(_add_field_with_default)
    v3 = copy.deepcopy(v2)
    _int_to_long(v3)
    assert backward_transitive_problems([(1, BASE), (2, v2), (3, v3)]) == []


def test_backward_transitive_catches_a_break_with_an_older_version_only():
    # v2 drops "note"; v3 re-adds "note" as an int with a default. v3 reads v2 (the default fills
    # in) but not v1, whose note is a string: only the transitive check sees it.
    v2 = evolve(_remove_field)
    v3 = copy.deepcopy(v2)
    v3["fields"].append({"name": "note", "type": "int", "default": 0})
    assert incompatibilities(v3, v2) == []  # adjacent versions are fine ...
    problems = backward_transitive_problems([(1, BASE), (2, v2), (3, v3)])
    assert problems and all(p.startswith("v3 cannot read v1") for p in problems)  # ... v1 is not


def test_backward_transitive_names_reader_and_writer_versions():
    broken = evolve(_add_field_without_default)
    problems = backward_transitive_problems([(1, BASE), (2, broken)])
    assert len(problems) == 1
    assert problems[0].startswith("v2 cannot read v1")
