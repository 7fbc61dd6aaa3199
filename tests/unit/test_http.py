"""threadline/http.py: validation errors name each field by its dotted path."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from connectors.contact import ContactIn
from threadline.http import validation_fields

from .conftest import full_contact_payload


def _fields_of(payload: dict) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ContactIn.model_validate(payload)
    return [f["field"] for f in validation_fields(info.value)]


def test_a_nested_list_item_field_is_named_by_its_dotted_path():
    assert _fields_of(
        full_contact_payload(identities=[{"kind": "email", "value": "a@b.c"}, {"kind": "fax", "value": "1"}])
    ) == ["identities.1.kind"]


def test_a_nested_record_field_is_named_by_its_dotted_path():
    assert _fields_of(full_contact_payload(actor={"role": "robot"})) == ["actor.role"]


def test_every_invalid_field_gets_its_own_entry_with_a_problem():
    payload = full_contact_payload(channel="pigeon", occurred_at="2026-01-01T00:00:00")
    with pytest.raises(ValidationError) as info:
        ContactIn.model_validate(payload)
    out = validation_fields(info.value)
    assert sorted(f["field"] for f in out) == ["channel", "occurred_at"]
    assert all(f["problem"] for f in out)


def test_fastapi_location_prefixes_are_not_part_of_the_field_name():
    exc = RequestValidationError(
        [
            {"loc": ("body", "identities", 0, "kind"), "msg": "bad kind", "type": "literal_error"},
            {"loc": ("query", "limit"), "msg": "too big", "type": "less_than_equal"},
            {"loc": ("path", "event_id"), "msg": "bad id", "type": "uuid_parsing"},
        ]
    )
    assert [f["field"] for f in validation_fields(exc)] == ["identities.0.kind", "limit", "event_id"]


def test_an_error_about_the_whole_body_is_named_body():
    exc = RequestValidationError([{"loc": ("body",), "msg": "Field required", "type": "missing"}])
    assert validation_fields(exc) == [{"field": "<body>", "problem": "Field required"}]


def test_a_metadata_key_named_like_a_request_location_keeps_its_place_in_the_path():
    # metadata keys come from the sender; "path" or "query" is a plausible one.
    assert _fields_of(full_contact_payload(metadata={"path": 5})) == ["metadata.path"]


# -- load_json reads what json.loads reads, to the same objects ---------------------------------

from hypothesis import given, settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@hsettings(max_examples=300)
@given(_JSON)
def test_load_json_gives_what_json_loads_gives(value):
    import json

    from threadline.http import load_json

    raw = json.dumps(value, ensure_ascii=False).encode()
    expected = json.loads(raw)
    got = load_json(raw)
    assert got == expected and repr(got) == repr(expected)  # big integers stay integers, -0.0 stays -0.0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": NaN}',
        b'{"a": 123456789012345678901234567890, "b": -9223372036854775809}',
        b'\xef\xbb\xbf{"a": 1}',
        '{"a": 1}'.encode("utf-16"),
        b'{"a": 1e400}',
        b'{"a": "x", "a": "y"}',
    ],
)
def test_load_json_reads_what_orjson_refuses_or_reads_otherwise_as_json_does(raw):
    import json

    from threadline.http import load_json

    assert repr(load_json(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1} x', b"[1,]", b'{"a": "\xff"}', b"{'a': 1}"])
def test_load_json_refuses_what_json_refuses(raw):
    from threadline.http import BadJson, load_json

    with pytest.raises(BadJson) as exc:
        load_json(raw)
    assert exc.value.field == "<body>" and exc.value.problem.startswith("not JSON")
