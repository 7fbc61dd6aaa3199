"""Encode and decode events in a self-describing Avro framing.

Two framings behind one interface:

* ``ConfluentCodec`` — Confluent's wire format: magic byte 0, a 4-byte big-endian schema id
  from a Confluent-compatible registry, then the Avro body. Subjects follow the topic-name
  strategy (``<topic>-value``).
* ``SingleObjectCodec`` — Avro single-object encoding: C3 01, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema, then the body; writer schemas are resolved from
  the versions kept in ``schemas/``. For places with no registry.

Schemas are parsed once. Decoding resolves the writer's schema to today's reader schema of the
same record, so a consumer always sees the current shape whatever version wrote the record.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas
from schemas.registry import RegistryClient
from threadline.errors import DecodeError, SchemaError

CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"


@dataclass(frozen=True)
class Decoded:
    schema_fullname: str
    record: dict


class Codec(Protocol):
    def encode(self, topic: str, subject: str, record: dict) -> bytes:
        """Encode ``record`` with the latest version of ``subject`` for ``topic``."""

    def decode(self, data: bytes) -> Decoded:
        """Decode a framed record; raises DecodeError for anything that is not one."""


def _write(parsed: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SchemaError(f"record does not match schema {parsed.get('name')}: {exc}") from exc
    return buf.getvalue()


def _read(body: bytes, writer: dict, reader: dict | None) -> dict:
    try:
        return fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
    except Exception as exc:  # fastavro raises many kinds on corrupt input; all are one failure
        raise DecodeError(f"avro body does not decode: {type(exc).__name__}: {exc}") from exc


def _fullname(raw: dict) -> str:
    ns = raw.get("namespace")
    return f"{ns}.{raw['name']}" if ns and "." not in raw["name"] else raw["name"]


class ConfluentCodec:
    """Writes Confluent frames; reads them and, for places that ran without a registry,
    single-object frames too (the magic bytes tell them apart)."""

    def __init__(self, registry: RegistryClient):
        self.registry = registry
        self._ids: dict[tuple[str, str], tuple[int, dict]] = {}
        self._writers: dict[int, tuple[str, dict]] = {}
        self._single_object: SingleObjectCodec | None = None

    def schema_id(self, topic: str, subject: str) -> int:
        return self._writer_for(topic, subject)[0]

    def _writer_for(self, topic: str, subject: str) -> tuple[int, dict]:
        key = (topic, subject)
        hit = self._ids.get(key)
        if hit is None:
            sv = schemas.latest(subject)
            schema_id = self.registry.register(f"{topic}-value", sv.text)
            hit = (schema_id, sv.parsed)
            self._ids[key] = hit
            self._writers[schema_id] = (sv.fullname, sv.parsed)
        return hit

    def encode(self, topic: str, subject: str, record: dict) -> bytes:
        schema_id, parsed = self._writer_for(topic, subject)
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + _write(parsed, record)

    def decode(self, data: bytes) -> Decoded:
        if data[:2] == SINGLE_OBJECT_MAGIC:
            self._single_object = self._single_object or SingleObjectCodec()
            return self._single_object.decode(data)
        if len(data) < 5 or data[:1] != CONFLUENT_MAGIC:
            raise DecodeError("not in the Confluent wire format (magic byte 0 + schema id)")
        (schema_id,) = struct.unpack(">I", data[1:5])
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                raw = json.loads(self.registry.schema_by_id(schema_id))
            except SchemaError as exc:
                raise DecodeError(f"unknown schema id {schema_id}: {exc}") from exc
            writer = (_fullname(raw), fastavro.parse_schema(raw))
            self._writers[schema_id] = writer
        name, parsed = writer
        reader = schemas.latest_by_fullname().get(name)
        reader_parsed = reader.parsed if reader is not None and reader.parsed is not parsed else None
        return Decoded(name, _read(data[5:], parsed, reader_parsed))


class SingleObjectCodec:
    def __init__(self) -> None:
        self._by_fp: dict[bytes, tuple[str, dict]] = {}
        self._fp_of: dict[str, bytes] = {}
        for subject in schemas.subjects():
            for sv in schemas.versions(subject):
                fp = self.fingerprint(sv.parsed)
                self._by_fp[fp] = (sv.fullname, sv.parsed)
            self._fp_of[subject] = self.fingerprint(schemas.latest(subject).parsed)

    @staticmethod
    def fingerprint(parsed: dict) -> bytes:
        # fastavro gives the CRC-64-AVRO value already as little-endian bytes, as the spec's
        # single-object encoding wants them (the spec's "null" vector: 8a8f25cce724dd63).
        return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))

    def encode(self, topic: str, subject: str, record: dict) -> bytes:
        sv = schemas.latest(subject)
        return SINGLE_OBJECT_MAGIC + self._fp_of[subject] + _write(sv.parsed, record)

    def decode(self, data: bytes) -> Decoded:
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError("not in Avro single-object encoding (C3 01 + fingerprint)")
        writer = self._by_fp.get(data[2:10])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        name, parsed = writer
        reader = schemas.latest_by_fullname().get(name)
        reader_parsed = reader.parsed if reader is not None and reader.parsed is not parsed else None
        return Decoded(name, _read(data[10:], parsed, reader_parsed))


def make_codec(settings) -> Codec:
    from threadline.settings import CodecKind

    if settings.codec is CodecKind.CONFLUENT:
        return ConfluentCodec(RegistryClient(settings.registry_url))
    return SingleObjectCodec()
