"""Avro binary encoding of one record schema, compiled once into a Python function.

fastavro's ``schemaless_writer`` resolves the schema's named types on every call and picks each
union's branch by validating the value against every branch: for a conversation event (14
unions, two nested records) that is ~40-80 µs an event, the largest single cost of the stream
worker. ``compile_writer`` turns a parsed schema into straight-line code once: each field read
from the record, each ``["null", X]`` union chosen by ``is None``, each value checked by its
exact Python type and written. The bytes are the Avro binary encoding, the same fastavro writes
(property-tested against it over every schema in ``schemas/avro``).

What it does not handle, it leaves to fastavro, so the caller's behaviour (its errors above all)
stays fastavro's:

* at compile time, a schema with a union that is not ``["null", X]`` / ``[X, "null"]`` or a
  logical type other than the integer ones and ``uuid`` compiles to ``None``;
* at run time, any value outside the fast path (a missing field, a datetime for a timestamp, a
  float for a long, a value of the wrong type) raises ``Fallback``, and the caller writes the
  whole record with fastavro instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# Logical types whose values this writer takes only as the underlying int or str (fastavro would
# convert a datetime, a UUID: those values go back to fastavro).
INT_LOGICAL = {
    "timestamp-millis",
    "timestamp-micros",
    "local-timestamp-millis",
    "local-timestamp-micros",
    "date",
    "time-millis",
    "time-micros",
}
STR_LOGICAL = {"uuid"}
TIMESTAMPS = {"timestamp-millis", "timestamp-micros"}  # an aware datetime is converted as fastavro does
_MIN64, _MAX64 = -(1 << 63), (1 << 63) - 1
_MIN32, _MAX32 = -(1 << 31), (1 << 31) - 1


class Fallback(Exception):
    """A value this writer does not encode itself: write the record with fastavro."""


class Unsupported(Exception):
    """A schema shape this writer does not compile."""


def _long(n: int, out: bytearray) -> None:
    if type(n) is not int or n < _MIN64 or n > _MAX64:
        raise Fallback
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _varint(i: int) -> bytes:
    """The Avro bytes of the long ``i``."""
    out = bytearray()
    _long(i, out)
    return bytes(out)


def _int(n: int, out: bytearray) -> None:
    if type(n) is not int or n < _MIN32 or n > _MAX32:
        raise Fallback
    _long(n, out)


def _str(s: str, out: bytearray) -> None:
    if type(s) is not str:
        raise Fallback
    b = s.encode()
    n = len(b)
    if n < 64:
        out.append(n << 1)
    else:
        _long(n, out)
    out += b


def _bytes(b: bytes, out: bytearray) -> None:
    if type(b) is not bytes:
        raise Fallback
    _long(len(b), out)
    out += b


def _bool(v: bool, out: bytearray) -> None:
    if type(v) is not bool:
        raise Fallback
    out.append(1 if v else 0)


def _null(v: None, out: bytearray) -> None:
    if v is not None:
        raise Fallback


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMES: dict[int, bytes] = {}  # epoch-millis ints -> their Avro bytes, the last ones written
_TIMES_KEPT = 4096


def _timestamp_millis(v: int | datetime, out: bytearray) -> None:
    """An int as it is (its bytes remembered: the events of a change repeat their times); an aware
    datetime as fastavro converts it (a naive one: Fallback)."""
    if type(v) is int:
        b = _TIMES.get(v)
        if b is None:
            part = bytearray()
            _long(v, part)  # Fallback out of range: nothing remembered
            if len(_TIMES) >= _TIMES_KEPT:
                _TIMES.clear()
            b = _TIMES[v] = bytes(part)
        out += b
        return
    if type(v) is datetime and v.tzinfo is not None:
        delta = v - _EPOCH
        v = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    _long(v, out)


def _timestamp_micros(v: int | datetime, out: bytearray) -> None:
    if type(v) is datetime and v.tzinfo is not None:
        delta = v - _EPOCH
        v = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    _long(v, out)


_DOUBLE, _FLOAT = struct.Struct("<d").pack, struct.Struct("<f").pack


def _double(v: float, out: bytearray) -> None:
    if type(v) is not float:
        raise Fallback
    out += _DOUBLE(v)


def _float(v: float, out: bytearray) -> None:
    if type(v) is not float:
        raise Fallback
    out += _FLOAT(v)


_PRIMITIVE_WRITERS: dict[str, Callable[[Any, bytearray], None]] = {
    "null": _null,
    "boolean": _bool,
    "int": _int,
    "long": _long,
    "float": _float,
    "double": _double,
    "bytes": _bytes,
    "string": _str,
}


class _Compiler:
    def __init__(self, named: dict[str, Any]):
        self.named = named
        self.ns: dict[str, Any] = {
            "Fallback": Fallback,
            "MISSING": _MISSING,
            "w_timestamp_millis": _timestamp_millis,
            "w_timestamp_micros": _timestamp_micros,
            **{f"w_{k}": v for k, v in _PRIMITIVE_WRITERS.items()},
        }
        self.records: dict[str, str] = {}  # record full name -> function name
        self.sources: list[str] = []
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def writer(self, schema: Any) -> str:
        """The name (in ``self.ns``) of a function ``(value, out)`` writing ``schema``."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_WRITERS:
                return f"w_{schema}"
            if schema not in self.named:
                raise Unsupported(f"unknown named type {schema}")
            return self.writer(self.named[schema])
        if isinstance(schema, list):
            return self.union(schema)
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        logical = schema.get("logicalType")
        kind = schema["type"]
        if logical is not None:
            if kind == "long" and logical == "timestamp-millis":
                return "w_timestamp_millis"
            if kind == "long" and logical == "timestamp-micros":
                return "w_timestamp_micros"
            if kind in ("int", "long") and logical in INT_LOGICAL:
                return f"w_{kind}"
            if kind == "string" and logical in STR_LOGICAL:
                return "w_string"
            raise Unsupported(f"logical type {logical} on {kind}")
        if kind in _PRIMITIVE_WRITERS:
            return f"w_{kind}"
        if kind == "record":
            return self.record(schema)
        if kind == "enum":
            fn = self.name("enum")
            self.ns[fn + "_index"] = {s: _varint(i) for i, s in enumerate(schema["symbols"])}
            self.sources.append(
                f"def {fn}(v, out):\n"
                f"    b = {fn}_index.get(v) if type(v) is str else None\n"
                "    if b is None:\n        raise Fallback\n"
                "    out += b\n"
            )
            return fn
        if kind == "array":
            item = self.writer(schema["items"])
            fn = self.name("array")
            self.sources.append(
                f"def {fn}(v, out):\n"
                "    if type(v) is not list and type(v) is not tuple:\n        raise Fallback\n"
                "    if v:\n"
                "        n = len(v)\n"
                "        if n < 64:\n            out.append(n << 1)\n        else:\n            w_long(n, out)\n"
                f"        for x in v:\n            {item}(x, out)\n"
                "    out.append(0)\n"
            )
            return fn
        if kind == "map":
            value = self.writer(schema["values"])
            fn = self.name("map")
            self.sources.append(
                f"def {fn}(v, out):\n"
                "    if type(v) is not dict:\n        raise Fallback\n"
                "    if v:\n"
                "        n = len(v)\n"
                "        if n < 64:\n            out.append(n << 1)\n        else:\n            w_long(n, out)\n"
                f"        for k, x in v.items():\n            w_string(k, out)\n            {value}(x, out)\n"
                "    out.append(0)\n"
            )
            return fn
        if kind == "fixed":
            fn = self.name("fixed")
            self.sources.append(
                f"def {fn}(v, out):\n"
                f"    if type(v) is not bytes or len(v) != {int(schema['size'])}:\n        raise Fallback\n"
                "    out += v\n"
            )
            return fn
        raise Unsupported(f"type {kind}")

    def union(self, branches: list) -> str:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("a union other than null and one type")
        null_at = branches.index("null")
        other = self.writer(branches[1 - null_at])
        fn = self.name("union")
        self.sources.append(
            f"def {fn}(v, out):\n"
            "    if v is None:\n"
            f"        out.append({2 * null_at})\n"
            "    else:\n"
            f"        out.append({2 * (1 - null_at)})\n"
            f"        {other}(v, out)\n"
        )
        return fn

    def inline(self, schema: Any, null_at: int | None = None) -> list[str] | None:
        """Code writing ``v`` in place, for the common field shapes (a string, a long, a
        timestamp-millis, either of them or null); None for the others. Any other value raises Fallback (MISSING too)."""
        if isinstance(schema, dict) and schema.get("type") in ("string", "long"):
            logical = schema.get("logicalType")
            if logical is None or (schema["type"] == "long" and logical in INT_LOGICAL - TIMESTAMPS):
                schema = schema["type"]
        if schema == "string":
            body = [
                "if type(v) is str:",
                "    b = v.encode()",
                "    if len(b) < 64:",
                "        out.append(len(b) << 1)",
                "    else:",
                "        w_long(len(b), out)",
                "    out += b",
            ]
        elif schema == "long":
            body = [
                "if type(v) is int:",
                "    if 0 <= v < 64:",
                "        out.append(v << 1)",
                "    else:",
                "        w_long(v, out)",
            ]
        elif (
            isinstance(schema, dict)
            and schema.get("type") == "long"
            and schema.get("logicalType") == "timestamp-millis"
        ):
            body = ["if v is not MISSING:", "    w_timestamp_millis(v, out)"]
        else:
            return None
        if null_at is not None:
            body[0] = body[0].replace("if ", "elif ", 1)
            body[1:1] = [f"    out.append({2 * (1 - null_at)})"]
            body = ["if v is None:", f"    out.append({2 * null_at})", *body]
        return [*body, "else:", "    raise Fallback"]

    def field_code(self, schema: Any) -> list[str]:
        if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
            null_at = schema.index("null")
            code = self.inline(schema[1 - null_at], null_at)
            if code is not None:
                return code
        code = self.inline(schema)
        if code is not None:
            return code
        return ["if v is MISSING:", "    raise Fallback", f"{self.writer(schema)}(v, out)"]

    def record(self, schema: dict) -> str:
        full = schema["name"]
        if full in self.records:
            return self.records[full]
        fn = self.name("record")
        self.records[full] = fn
        return self.fields(fn, schema["fields"])

    def fields(self, fn: str, fields: list[dict]) -> str:
        """A function ``fn(d, out)`` writing the values of ``fields`` of the dict ``d``, in order."""
        lines = [f"def {fn}(d, out):", "    if type(d) is not dict:", "        raise Fallback", "    get = d.get"]
        for i, field in enumerate(fields):
            key = f"{fn}_f{i}"
            self.ns[key] = field["name"]
            # a missing field raises Fallback: fastavro fills defaults (and words the errors)
            lines.append(f"    v = get({key}, MISSING)")
            lines += ["    " + line for line in self.field_code(field["type"])]
        self.sources.append("\n".join(lines) + "\n")
        return fn


_MISSING = object()


def compile_writer(parsed: dict) -> Callable[[dict], bytes] | None:
    """A function writing a record of ``parsed`` (a schema from ``fastavro.parse_schema``) as Avro
    binary, raising ``Fallback`` for a value it leaves to fastavro; None when the schema has a
    shape it does not compile."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    compiler = _Compiler(dict(parsed.get("__named_schemas", {})))
    try:
        top = compiler.record(parsed)
    except (Unsupported, KeyError, TypeError, ValueError):
        return None
    ns = compiler.ns
    exec("\n".join(compiler.sources), ns)  # noqa: S102 - code generated above from the schema alone
    write_record = ns[top]

    def write(record: dict) -> bytes:
        out = bytearray()
        write_record(record, out)
        return bytes(out)

    return write


def compile_fields(parsed: dict, names: Sequence[str]) -> Callable[[dict, bytearray], None] | None:
    """A function appending the Avro binary of the fields ``names`` of a record of ``parsed`` to
    ``out``, raising ``Fallback`` as ``compile_writer``'s does; None when the schema does not
    compile or ``names`` are not consecutive fields in the schema's order. A record's encoding is
    its fields' encodings one after the other, so writing consecutive runs of fields in turn gives
    the bytes ``compile_writer`` gives."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = parsed["fields"]
    order = [f["name"] for f in fields]
    if not names or names[0] not in order:
        return None
    start = order.index(names[0])
    if order[start : start + len(names)] != list(names):
        return None
    compiler = _Compiler(dict(parsed.get("__named_schemas", {})))
    try:
        top = compiler.fields("fields", fields[start : start + len(names)])
    except (Unsupported, KeyError, TypeError, ValueError):
        return None
    exec("\n".join(compiler.sources), compiler.ns)  # noqa: S102 - code generated above from the schema alone
    return compiler.ns[top]


class RunsWriter:
    """Records of one schema, many at a time, when runs of their fields repeat from one record to
    the next (the events of one change share the customer's facts and the conversation's
    snapshot): the schema's fields cut into consecutive runs, and a run in ``shared`` whose values
    are the very objects of the previous record's (``is``, not ``==``: ``1``, ``1.0`` and ``True``
    are equal and encode differently) is not written again, the previous record's bytes of that run
    are reused. The bytes equal ``compile_writer``'s; a record it does not take (``Fallback``) is
    None in the answer, for the caller to write with fastavro.

    The records must not change while ``write_all`` runs (nothing else runs meanwhile)."""

    def __init__(self, parsed: dict, shared: Sequence[Sequence[str]]):
        order = [f["name"] for f in parsed["fields"]]
        cuts: list[tuple[tuple[str, ...], bool]] = []
        at = 0
        for run in sorted(shared, key=lambda r: order.index(r[0])):
            start = order.index(run[0])
            if start < at:
                raise Unsupported(f"shared runs overlap at {run[0]}")
            if start > at:
                cuts.append((tuple(order[at:start]), False))
            cuts.append((tuple(run), True))
            at = start + len(run)
        if at < len(order):
            cuts.append((tuple(order[at:]), False))
        self.runs: list[tuple[Callable[[dict, bytearray], None], Callable[[dict, dict], bool] | None]] = []
        for names, is_shared in cuts:
            write = compile_fields(parsed, names)
            if write is None:
                raise Unsupported(f"fields {names} do not compile")
            self.runs.append((write, _same_values(names) if is_shared else None))

    def write_all(self, records: Sequence[dict]) -> list[bytes | None]:
        out: list[bytes | None] = []
        runs = self.runs
        previous: list[tuple[dict, bytes] | None] = [None] * len(runs)
        for record in records:
            if type(record) is not dict:
                out.append(None)
                continue
            body = bytearray()
            try:
                for i, (write, same) in enumerate(runs):
                    if same is None:
                        write(record, body)
                        continue
                    prev = previous[i]
                    if prev is not None and same(record, prev[0]):
                        body += prev[1]
                        continue
                    part = bytearray()
                    write(record, part)
                    previous[i] = (record, bytes(part))
                    body += part
            except Fallback:
                out.append(None)
                continue
            out.append(bytes(body))
        return out


def _same_values(names: tuple[str, ...]) -> Callable[[dict, dict], bool]:
    """``same(d, p)``: whether each of ``names`` holds the same object in ``d`` as in ``p`` (a
    field missing from both counts as the same)."""
    ns: dict[str, Any] = {"MISSING": _MISSING}
    terms = []
    for i, name in enumerate(names):
        ns[f"n{i}"] = name
        terms.append(f"d.get(n{i}, MISSING) is p.get(n{i}, MISSING)")
    exec(f"def same(d, p):\n    return {' and '.join(terms)}\n", ns)  # noqa: S102 - from the field names alone
    return ns["same"]
