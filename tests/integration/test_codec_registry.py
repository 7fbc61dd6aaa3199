"""The Confluent codec against the real schema registry."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

import schemas
from connectors.contact import ContactIn, to_record
from schemas.codec import ConfluentCodec, SingleObjectCodec
from schemas.registry import RegistryClient
from threadline.errors import DecodeError
from threadline.settings import CodecKind


@pytest.fixture
def registry(settings):
    if settings.registry.codec is not CodecKind.CONFLUENT:
        pytest.skip("THREADLINE_CODEC=single-object: no registry in this run")
    client = RegistryClient(settings.registry.url)
    yield client
    client.close()


def _contact(pid: str) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    c = ContactIn(
        provider_id=pid,
        channel="sms",
        occurred_at=now,
        text="ciao",
        identities=[{"kind": "phone", "value": "+393331234567"}],
    )
    return to_record(c, now)


def test_confluent_frames_carry_the_registry_id_and_round_trip(registry, unique):
    codec = ConfluentCodec(registry)
    topic = f"test.{unique}"
    record = _contact("m-1")
    data = codec.encode(topic, schemas.CONTACT, record)
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert data[0] == 0
    assert registry.versions(f"{topic}-value")  # registered (the list of subjects stops at 1,000)
    assert registry.schema_by_id(schema_id)
    # A fresh codec (another process, say) resolves the writer schema from the registry by id.
    decoded = ConfluentCodec(RegistryClient(registry.url)).decode(data)
    assert decoded.schema_fullname == "threadline.contact.Contact"
    assert decoded.record == record


def test_registering_the_same_schema_again_gives_the_same_id(registry, unique):
    first = ConfluentCodec(registry).schema_id(f"test.{unique}", schemas.CONTACT)
    second = ConfluentCodec(RegistryClient(registry.url)).schema_id(f"test.{unique}", schemas.CONTACT)
    assert first == second


def test_an_id_the_registry_does_not_know_is_a_decode_error(registry):
    with pytest.raises(DecodeError):
        ConfluentCodec(registry).decode(b"\x00" + struct.pack(">I", 987654) + b"\x02")


def test_single_object_frames_are_read_by_the_confluent_codec_too(registry):
    record = _contact("m-2")
    framed = SingleObjectCodec().encode("contacts.v1", schemas.CONTACT, record)
    assert ConfluentCodec(registry).decode(framed).record == record
