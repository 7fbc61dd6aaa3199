"""THE contract test: every published schema version stays readable by every later one.

A schema change that would break a consumer of contacts.v1 (or any other subject) fails here.
"""

from __future__ import annotations

import copy
import json
import re
import shutil

import fastavro
import pytest

import schemas
from schemas.compat import backward_transitive_problems

SUBJECTS = schemas.subjects()


def contract_problems(subject: str) -> list[str]:
    """What the contract test checks, so the simulated bad version below runs the same code."""
    return backward_transitive_problems([(sv.version, sv.raw) for sv in schemas.versions(subject)])


def test_the_event_contract_has_the_three_foundation_subjects():
    assert {schemas.CONTACT, schemas.IDENTITY_EVENT, schemas.CONVERSATION_EVENT} <= set(SUBJECTS)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_published_schema_versions_are_backward_transitive_compatible(subject):
    assert contract_problems(subject) == []


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_published_version_parses_with_fastavro(subject):
    for sv in schemas.versions(subject):
        parsed = fastavro.parse_schema(json.loads(sv.path.read_text()))
        assert parsed["type"] == "record", sv.path


@pytest.mark.parametrize("subject", SUBJECTS)
def test_no_schema_file_is_silently_left_out_of_the_history(subject):
    # versions() skips names that are not v<N>.avsc; such a file would escape the contract test.
    files = sorted(p.name for p in (schemas.AVRO_DIR / subject).iterdir() if p.suffix == ".avsc")
    assert files and all(re.fullmatch(r"v\d+\.avsc", f) for f in files), files
    assert len(schemas.versions(subject)) == len(files)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_all_versions_of_a_subject_keep_the_record_full_name(subject):
    # The codec finds today's reader by the writer's full name; a rename would orphan old data.
    assert len({sv.fullname for sv in schemas.versions(subject)}) == 1


# --- a bad new version must be reported ---------------------------------------------------------


@pytest.fixture
def avro_copy(tmp_path, monkeypatch):
    """A private copy of schemas/avro that schemas.* reads from for the length of one test."""
    target = tmp_path / "avro"
    shutil.copytree(schemas.AVRO_DIR, target)
    monkeypatch.setattr(schemas, "AVRO_DIR", target)
    schemas.versions.cache_clear()
    schemas.latest_by_fullname.cache_clear()
    yield target
    schemas.versions.cache_clear()
    schemas.latest_by_fullname.cache_clear()


def _publish_next(avro_dir, change) -> int:
    current = schemas.latest(schemas.CONTACT)
    raw = copy.deepcopy(current.raw)
    change(raw)
    version = current.version + 1
    (avro_dir / schemas.CONTACT / f"v{version}.avsc").write_text(json.dumps(raw, indent=2))
    schemas.versions.cache_clear()
    return version


def test_a_new_contact_version_with_a_required_field_fails_the_contract(avro_copy):
    version = _publish_next(avro_copy, lambda raw: raw["fields"].append({"name": "sentiment", "type": "string"}))
    assert schemas.latest(schemas.CONTACT).version == version
    problems = contract_problems(schemas.CONTACT)
    # BACKWARD_TRANSITIVE: one problem for each earlier version it could not read
    assert problems == [
        f"v{version} cannot read v{v}: <root>.sentiment: added without a default" for v in range(1, version)
    ]


def test_a_new_contact_version_dropping_a_channel_fails_the_contract(avro_copy):
    def drop_whatsapp(raw):
        channel = next(f for f in raw["fields"] if f["name"] == "channel")["type"]
        channel["symbols"].remove("whatsapp")
        del channel["default"]

    _publish_next(avro_copy, drop_whatsapp)
    problems = contract_problems(schemas.CONTACT)
    assert len(problems) == len(schemas.versions(schemas.CONTACT)) - 1 and all("whatsapp" in p for p in problems)


def test_a_new_contact_version_with_an_optional_field_passes_the_contract(avro_copy):
    version = _publish_next(
        avro_copy, lambda raw: raw["fields"].append({"name": "sentiment", "type": ["null", "string"], "default": None})
    )
    assert schemas.latest(schemas.CONTACT).version == version
    assert contract_problems(schemas.CONTACT) == []


# --- the contact envelope carries what design.md's "Event contract" lists ------------------------

CONTACT_RAW = schemas.latest(schemas.CONTACT).raw


def _fields(record: dict) -> dict[str, dict]:
    return {f["name"]: f for f in record["fields"]}


def _non_null(avro_type):
    """The one non-null branch of an optional type, or the type itself."""
    if isinstance(avro_type, list):
        (branch,) = [b for b in avro_type if b != "null"]
        return branch
    return avro_type


def _enum_symbols(avro_type) -> set[str]:
    t = _non_null(avro_type)
    assert isinstance(t, dict) and t["type"] == "enum", t
    return set(t["symbols"])


def _record_fields(avro_type) -> dict[str, dict]:
    t = _non_null(avro_type)
    if t["type"] == "array":
        t = t["items"]
    assert t["type"] == "record", t
    return _fields(t)


def test_contact_schema_carries_the_envelope_fields_of_the_design():
    names = set(_fields(CONTACT_RAW))
    assert {
        "event_id",
        "event_type",
        "occurred_at",
        "recorded_at",
        "connector",
        "channel",
        "direction",
        "actor",
        "identities",
        "text",
        "language",
        "attachments",
        "thread",
        "facts",
        "consent",
        "provider_id",
    } <= names


def test_contact_times_are_timestamps_in_milliseconds():
    f = _fields(CONTACT_RAW)
    for name in ("occurred_at", "recorded_at"):
        assert f[name]["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_contact_channel_covers_every_channel_of_the_design():
    assert {
        "email",
        "sms",
        "whatsapp",
        "chat",
        "voice",
        "ivr",
        "twitter",
        "facebook",
        "instagram",
        "review",
        "web_form",
        "store",
    } <= _enum_symbols(_fields(CONTACT_RAW)["channel"]["type"])


def test_contact_direction_is_inbound_outbound_or_internal():
    assert {"inbound", "outbound", "internal"} <= _enum_symbols(_fields(CONTACT_RAW)["direction"]["type"])


def test_contact_actor_has_role_and_department():
    actor = _record_fields(_fields(CONTACT_RAW)["actor"]["type"])
    assert {"customer", "agent", "bot"} <= _enum_symbols(actor["role"]["type"])
    assert {"support", "sales", "marketing"} <= _enum_symbols(actor["department"]["type"])


def test_contact_identities_have_kind_and_value_of_every_design_kind():
    identity = _record_fields(_fields(CONTACT_RAW)["identities"]["type"])
    assert identity["value"]["type"] == "string"
    assert {"email", "phone", "social", "account", "cookie", "device"} <= _enum_symbols(identity["kind"]["type"])


def test_contact_attachments_are_metadata_without_content_bytes():
    attachment = _record_fields(_fields(CONTACT_RAW)["attachments"]["type"])
    assert {"name", "content_type", "size_bytes"} <= set(attachment)
    assert all(_non_null(f["type"]) != "bytes" for f in attachment.values())


def test_contact_thread_hints_cover_email_social_and_calls():
    thread = _record_fields(_fields(CONTACT_RAW)["thread"]["type"])
    assert {"message_id", "in_reply_to", "reply_to_id", "call_id"} <= set(thread)


def test_contact_facts_and_consent_are_structured_lists():
    f = _fields(CONTACT_RAW)
    assert {"kind", "value"} <= set(_record_fields(f["facts"]["type"]))
    assert {"purpose", "granted"} <= set(_record_fields(f["consent"]["type"]))


def test_contact_text_and_language_are_optional():
    f = _fields(CONTACT_RAW)
    for name in ("text", "language"):
        assert "null" in f[name]["type"] and f[name]["default"] is None
