"""Encode and decode events in a self-describing Avro framing.

Two framings behind one interface:

* ``ConfluentCodec`` — Confluent's wire format: magic byte 0, a 4-byte big-endian schema id
  from a Confluent-compatible registry, then the Avro body. Subjects follow the topic-name
  strategy (``<topic>-value``).
* ``SingleObjectCodec`` — Avro single-object encoding: C3 01, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema, then the body; writer schemas are resolved from
  the versions kept in ``schemas/``. For places with no registry.

Schemas are parsed once per process. Decoding gives today's reader shape of the record whatever
version wrote it. How is decided once per writer schema (a ``ReadPlan``): when the writer's
parsing canonical form equals the reader's, the body is read directly with the reader's parsed
schema, no resolution (the canonical form fixes the binary layout, so this reads the same bytes
the same way; logical types are the reader's); otherwise fastavro resolves the writer's schema
to the reader's (an older version: defaults filled in, removed fields dropped).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas
from schemas.avro_reader import Unreadable, compile_reader
from schemas.avro_writer import Fallback, compile_writer
from schemas.registry import RegistryClient
from threadline.errors import DecodeError, SchemaError

CONFLUENT_MAGIC = b"\x00"
_SCHEMA_ID = struct.Struct(">I")
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


_WRITERS: dict[int, tuple[dict, Any]] = {}
_READERS: dict[int, tuple[dict, Any]] = {}


def _once(cache: dict[int, tuple[dict, Any]], make: Callable[[dict], Any], parsed: dict) -> Any:
    """``make(parsed)``, once per parsed schema object (kept beside it: an id is not reused while
    the object lives)."""
    hit = cache.get(id(parsed))
    if hit is None or hit[0] is not parsed:
        hit = (parsed, make(parsed))
        cache[id(parsed)] = hit
    return hit[1]


def _compiled(parsed: dict) -> Callable[[dict], bytes] | None:
    """The compiled writer of a parsed schema (``schemas.avro_writer``), once per schema object."""
    return _once(_WRITERS, compile_writer, parsed)


def _compiled_reader(parsed: dict) -> Callable[[bytes, int], dict] | None:
    """The compiled reader of a parsed schema (``schemas.avro_reader``), once per schema object."""
    return _once(_READERS, compile_reader, parsed)


def _write(parsed: dict, record: dict) -> bytes:
    """Avro binary of ``record``: the compiled writer when it takes the record, else fastavro
    (whose errors, as SchemaError, are the answer for a record that does not match)."""
    write = _compiled(parsed)
    if write is not None:
        try:
            return write(record)
        except Fallback:
            pass
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


@dataclass(frozen=True)
class ReadPlan:
    """How to read the bodies one writer schema wrote: with ``schema``, resolved to ``reader``
    unless ``reader`` is None (the direct path: the writer is today's reader, or no reader
    schema of that name exists here). A direct plan reads with ``schema``'s compiled reader
    (``schemas.avro_reader.compile_reader``) and asks fastavro only for a body that reader
    refuses, so fastavro's answer (the record, or the error) is the one that counts."""

    fullname: str
    schema: dict
    reader: dict | None
    compiled: Callable[[bytes, int], dict] | None = field(default=None, compare=False, repr=False)

    @property
    def direct(self) -> bool:
        return self.reader is None

    def read(self, body: bytes) -> Decoded:
        return self.read_at(body, 0)

    def read_at(self, data: bytes, start: int) -> Decoded:
        """The record whose body starts at ``start`` of ``data`` and runs to its end."""
        if self.compiled is not None:
            try:
                return Decoded(self.fullname, self.compiled(data, start))
            except Unreadable:
                pass
        return Decoded(self.fullname, _read(data[start:] if start else data, self.schema, self.reader))


@lru_cache(maxsize=None)
def _canonical_of_reader(fullname: str) -> str | None:
    reader = schemas.latest_by_fullname().get(fullname)
    return to_parsing_canonical_form(reader.parsed) if reader is not None else None


def read_plan(fullname: str, writer: dict) -> ReadPlan:
    """Decide once per writer schema (``writer`` parsed) how to read what it wrote."""
    reader = schemas.latest_by_fullname().get(fullname)
    if reader is None:
        return ReadPlan(fullname, writer, None, _compiled_reader(writer))
    if writer is reader.parsed or to_parsing_canonical_form(writer) == _canonical_of_reader(fullname):
        return ReadPlan(fullname, reader.parsed, None, _compiled_reader(reader.parsed))
    return ReadPlan(fullname, writer, reader.parsed)


@lru_cache(maxsize=None)
def _plan_of_text(text: str) -> ReadPlan:
    """A registry's schema text, parsed once per process however many codecs read it."""
    raw = json.loads(text)
    return read_plan(_fullname(raw), fastavro.parse_schema(raw))


class ConfluentCodec:
    """Writes Confluent frames; reads them and, for places that ran without a registry,
    single-object frames too (the magic bytes tell them apart)."""

    def __init__(self, registry: RegistryClient):
        self.registry = registry
        self._ids: dict[tuple[str, str], tuple[int, dict]] = {}
        self._plans: dict[int, ReadPlan] = {}
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
            self._plans.setdefault(schema_id, read_plan(sv.fullname, sv.parsed))
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
        (schema_id,) = _SCHEMA_ID.unpack_from(data, 1)
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self.plan(schema_id)
        return plan.read_at(data, 5)

    def plan(self, schema_id: int) -> ReadPlan:
        """How this codec reads the bodies of ``schema_id`` (fetched from the registry once)."""
        plan = self._plans.get(schema_id)
        if plan is None:
            try:
                text = self.registry.schema_by_id(schema_id)
            except SchemaError as exc:
                raise DecodeError(f"unknown schema id {schema_id}: {exc}") from exc
            try:
                plan = _plan_of_text(text)
            except Exception as exc:  # the registry gave something that is no Avro schema
                raise DecodeError(f"schema id {schema_id} does not parse: {type(exc).__name__}: {exc}") from exc
            self._plans[schema_id] = plan
        return plan


class SingleObjectCodec:
    def __init__(self) -> None:
        self._by_fp: dict[bytes, ReadPlan] = {}
        self._fp_of: dict[str, bytes] = {}
        for subject in schemas.subjects():
            for sv in schemas.versions(subject):
                fp = self.fingerprint(sv.parsed)
                self._by_fp[fp] = read_plan(sv.fullname, sv.parsed)
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
        plan = self._by_fp.get(data[2:10])
        if plan is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        return plan.read_at(data, 10)


def make_codec(settings) -> Codec:
    from threadline.settings import CodecKind

    if settings.registry.codec is CodecKind.CONFLUENT:
        return ConfluentCodec(RegistryClient(settings.registry.url))
    return SingleObjectCodec()


def plan_of(codec: Codec, data: bytes) -> tuple[int, ReadPlan] | None:
    """How ``codec`` reads the frame ``data``: the length of its header and the plan of its writer
    schema; None when it has no plan for it (not a frame it reads, an unknown schema)."""
    try:
        if data[:2] == SINGLE_OBJECT_MAGIC and isinstance(codec, ConfluentCodec | SingleObjectCodec):
            if isinstance(codec, ConfluentCodec):  # the one its decode makes for these frames
                codec._single_object = codec._single_object or SingleObjectCodec()
            single = codec if isinstance(codec, SingleObjectCodec) else codec._single_object
            assert single is not None
            plan = single._by_fp.get(data[2:10])
            return None if plan is None or len(data) < 10 else (10, plan)
        if isinstance(codec, ConfluentCodec) and len(data) >= 5 and data[:1] == CONFLUENT_MAGIC:
            return 5, codec.plan(_SCHEMA_ID.unpack_from(data, 1)[0])
    except DecodeError:
        return None
    return None
