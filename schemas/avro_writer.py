"""Avro binary encoding compiled once per schema: the bytes ``fastavro.schemaless_writer`` writes,
in about two fifths of its time, for the schemas the project writes.

fastavro walks the schema for every record and picks each union's branch by validating the value
against the branches in turn; a contact (22 unions, 6 enums) took ~21 µs there, a tenth of the
gateway's CPU per request. ``compile_writer`` turns a parsed schema into nested closures once: a
``["null", X]`` union writes null for None and X otherwise, an enum looks its symbol up in a dict.

What it compiles: records, enums, arrays, maps, unions of null and one other type, string, bytes,
boolean, int, long and long ``timestamp-millis``. Anything else (float, double, fixed, other
unions and logical types) raises ``Unsupported`` and the codec keeps fastavro for that schema.

Records are written as fastavro writes them, invalid ones included as far as the codec can tell:
a missing field takes its default (ValueError without one, unless the type admits null), a value
of the wrong type raises TypeError, AttributeError, KeyError or ValueError (the codec's
SchemaError), a long beyond 64 bits OverflowError, and booleans and floats are taken as integers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Write = Callable[[list, Any], None]

_MIN_LONG, _MAX_LONG = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)


class Unsupported(ValueError):
    """A construct this writer does not compile (fastavro writes that schema)."""


def _zigzag(n: int) -> bytes:
    if not _MIN_LONG <= n <= _MAX_LONG:
        raise OverflowError("Python int too large to convert to C long")
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_zigzag(i) for i in range(1024)]  # 0..1023: lengths, counts, enum indexes


def _long(value: Any) -> bytes:
    if value.__class__ is int and 0 <= value < 1024:
        return _SMALL[value]
    if isinstance(value, (int, float)):  # bool is an int; a float is truncated, as fastavro's C conversion does
        return _zigzag(int(value))
    raise TypeError(f"an integer is required, not {type(value).__name__}")


def _write_long(out: list, value: Any) -> None:
    out.append(_long(value))


def _write_string(out: list, value: Any) -> None:
    try:
        data = value.encode()
    except AttributeError:
        raise TypeError("must be string") from None
    out.append(_long(len(data)))
    out.append(data)


def _write_bytes(out: list, value: Any) -> None:
    out.append(_long(len(value)))
    out.append(value)


def _write_boolean(out: list, value: Any) -> None:
    out.append(b"\x01" if value else b"\x00")


def _write_null(out: list, value: Any) -> None:
    pass  # nothing to write, and fastavro checks nothing


def _write_timestamp_millis(out: list, value: Any) -> None:
    if isinstance(value, datetime):
        delta = value - (_EPOCH if value.tzinfo is not None else _EPOCH_NAIVE)
        value = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    out.append(_long(value))


_PRIMITIVES: dict[str, Write] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_long,
    "long": _write_long,
    "string": _write_string,
    "bytes": _write_bytes,
}


def compile_writer(schema: Any) -> Callable[[Any], bytes]:
    """``schema`` (parsed by fastavro, or its JSON) as a function from a record to its Avro body."""
    write = _compile(schema, {})

    def encode(record: Any) -> bytes:
        out: list[bytes] = []
        write(out, record)
        return b"".join(out)

    return encode


def _compile(schema: Any, named: dict[str, Write]) -> Write:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in named:
            return named[schema]
        raise Unsupported(f"type {schema!r}")
    if isinstance(schema, list):
        return _union(schema, named)
    if not isinstance(schema, dict):
        raise Unsupported(f"schema {schema!r}")
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        if kind == "long" and logical == "timestamp-millis":
            return _write_timestamp_millis
        raise Unsupported(f"logical type {logical!r} of {kind!r}")
    if kind == "record" or kind == "error":
        return _record(schema, named)
    if kind == "enum":
        return _enum(schema, named)
    if kind == "array":
        return _array(_compile(schema["items"], named))
    if kind == "map":
        return _map(_compile(schema["values"], named))
    return _compile(kind, named)


def _union(branches: list, named: dict[str, Write]) -> Write:
    if len(branches) != 2 or branches[0] != "null" or branches[1] == "null":
        raise Unsupported(f"union {branches!r}")
    other = _compile(branches[1], named)

    def write(out: list, value: Any) -> None:
        if value is None:
            out.append(b"\x00")
        else:
            out.append(b"\x02")
            other(out, value)

    return write


def _record(schema: dict, named: dict[str, Write]) -> Write:
    fields: list[tuple[str, Write, bool, Any]] = []

    def write(out: list, record: Any) -> None:
        for name, field_write, required, default in fields:
            if name in record:
                field_write(out, record[name])
            elif required:
                raise ValueError(f"no value and no default for {name}")
            else:
                field_write(out, default)

    named[schema["name"]] = write  # before the fields: a record may refer to itself
    for field in schema["fields"]:
        ftype = field["type"]
        # fastavro: a missing field takes its default, else None where the type's "null" test passes
        nullable = isinstance(ftype, (list, str)) and "null" in ftype
        fields.append(
            (field["name"], _compile(ftype, named), "default" not in field and not nullable, field.get("default"))
        )
    return write


def _enum(schema: dict, named: dict[str, Write]) -> Write:
    index = {symbol: _long(i) for i, symbol in enumerate(schema["symbols"])}

    def write(out: list, value: Any) -> None:
        try:
            out.append(index[value])
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not in list") from None

    named[schema["name"]] = write
    return write


def _array(items: Write) -> Write:
    def write(out: list, value: Any) -> None:
        if len(value) > 0:
            out.append(_long(len(value)))
            for item in value:
                items(out, item)
        out.append(b"\x00")

    return write


def _map(values: Write) -> Write:
    def write(out: list, value: Any) -> None:
        if len(value) > 0:
            out.append(_long(len(value)))
            for key, item in value.items():
                _write_string(out, key)
                values(out, item)
        out.append(b"\x00")

    return write
