"""Some fields of an Avro record read from its binary body, the others skipped, compiled once
into a Python function.

A stage that needs a few fields of a large record (the identity stage: a contact's id, times,
identities and facts, not its text, attachments, thread, consent and metadata) pays for all of
it with fastavro's ``schemaless_reader``: every string decoded, every nested record a dict, every
timestamp a datetime. ``compile_projection(parsed, wanted)`` turns a parsed schema into
straight-line code once: the wanted top-level fields are read as fastavro reads them, except
that logical types are not applied (a ``timestamp-millis`` is its long), and every other field is
skipped by its length.

``compile_reader(parsed)`` reads every field, logical types applied as fastavro applies them: the
whole record fastavro's ``schemaless_reader`` gives, in about half its time (straight-line code
for one schema against fastavro's walk of the schema for every record). The codec reads with it
when the writer's schema is the reader's.

A skipped field is still checked as fastavro would read it: a string's bytes are valid UTF-8, an
enum's index and a union's branch exist. Whatever the function cannot read (a body cut short or
too long, a bad index, bad UTF-8) raises ``Unreadable``: the caller then decodes the whole body
with the codec, whose answer (the record, or its ``DecodeError``) is the one that counts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_FLOAT, _DOUBLE = struct.Struct("<f"), struct.Struct("<d")
# fastavro's timestamp-millis: the epoch plus a timedelta (not datetime.fromtimestamp, whose
# rounding differs for some values)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOGICAL = {("long", "timestamp-millis")}  # the logical types a full reader applies


class Unreadable(Exception):
    """A body the projection does not read: decode it the long way."""


def _more(b: bytes, p: int, v: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``v`` (at ``p - 1``) had its high bit set."""
    n, shift = v & 0x7F, 7
    while True:
        x = b[p]
        p += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return n, p
        shift += 7
        if shift == 63:  # the tenth byte: fastavro keeps the low 64 bits, of it bit 0 only
            x = b[p]
            p += 1
            if x >= 0x80:
                raise Unreadable("varint too long")
            return n | (x & 1) << 63, p


def _utf8(b: bytes, p: int, e: int) -> None:
    """Bytes ``p:e`` of a skipped string checked as fastavro would decode them."""
    chunk = b[p:e]
    if not chunk.isascii():
        try:
            chunk.decode()
        except UnicodeDecodeError as exc:
            raise Unreadable(str(exc)) from None


class _Compiler:
    """Python source of a reader: one function per record, array, map and union it meets."""

    def __init__(self, named: dict[str, Any], logical: bool = False):
        self.named = named
        self.logical = logical  # apply logical types (``_LOGICAL``; another one: not compiled)
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.made: dict[tuple[str, int], str] = {}
        self.inlining: set[int] = set()
        self.n = 0

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"_{prefix}{self.n}"

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        return schema

    def _long(self, ind: str, var: str) -> list[str]:
        return [
            f"{ind}{var} = b[p]",
            f"{ind}p += 1",
            f"{ind}if {var} > 0x7F:",
            f"{ind}    {var}, p = _more(b, p, {var})",
            f"{ind}{var} = ({var} >> 1) ^ -({var} & 1)",
        ]

    def _length(self, ind: str) -> list[str]:
        """A string's or bytes' length into ``v``, its end into ``e`` (never before ``p``)."""
        return [
            f"{ind}v = b[p]",
            f"{ind}p += 1",
            f"{ind}if v > 0x7F:",
            f"{ind}    v, p = _more(b, p, v)",
            f"{ind}if v & 1:",
            f"{ind}    raise Unreadable('negative length')",
            f"{ind}e = p + (v >> 1)",
        ]

    def code(self, schema: Any, ind: str, target: str | None) -> list[str]:
        """Statements reading ``schema`` at ``p`` into ``target`` (None: skipped), ``p`` moved on."""
        schema = self._resolve(schema)
        if isinstance(schema, list):  # a union, inline: its branch's index, then the branch
            # fewer than 64 branches: a valid index is one byte, its zigzag 2 × index
            small = len(schema) < 64
            lines = [f"{ind}v = b[p]", f"{ind}p += 1"] if small else self._long(ind, "v")
            for i, branch in enumerate(schema):
                lines.append(f"{ind}{'if' if i == 0 else 'elif'} v == {2 * i if small else i}:")
                lines += self.code(branch, ind + "    ", target) or [f"{ind}    pass"]
            return lines + [f"{ind}else:", f"{ind}    raise Unreadable('union index')"]
        kind = schema if isinstance(schema, str) else schema["type"]
        if self.logical and isinstance(schema, dict) and "logicalType" in schema:
            if (kind, schema["logicalType"]) not in _LOGICAL:
                raise Unreadable(f"no reader for logical type {schema['logicalType']!r}")
            if target is not None:  # timestamp-millis
                return self._long(ind, "v") + [f"{ind}{target} = _EPOCH + _TD(microseconds=v * 1000)"]
        if target is None and kind in ("record", "error") and id(schema) not in self.inlining:
            self.inlining.add(id(schema))  # a skipped record, inline (a recursive one: a function)
            lines = [line for f in schema["fields"] for line in self.code(f["type"], ind, None)]
            self.inlining.discard(id(schema))
            return lines
        if isinstance(schema, dict) and kind in ("record", "error", "array", "map", "enum", "fixed"):
            if kind == "enum":
                symbols = self._name("symbols")
                count = len(schema["symbols"])
                if count < 64:  # a valid index is one byte, its zigzag 2 × index
                    self.consts[symbols] = tuple(x for s in schema["symbols"] for x in (s, None))
                    lines = [f"{ind}v = b[p]", f"{ind}p += 1"]
                    lines += [f"{ind}if v >= {2 * count} or v & 1:", f"{ind}    raise Unreadable('enum index')"]
                else:
                    self.consts[symbols] = tuple(schema["symbols"])
                    lines = self._long(ind, "v")
                    lines += [f"{ind}if v < 0 or v >= {count}:", f"{ind}    raise Unreadable('enum index')"]
                if target is not None:
                    lines.append(f"{ind}{target} = {symbols}[v]")
                return lines
            if kind == "fixed":
                size = int(schema["size"])
                lines = [f"{ind}{target} = b[p:p + {size}]"] if target is not None else []
                return lines + [f"{ind}p += {size}"]
            return [f"{ind}{'p' if target is None else target + ', p'} = {self.function(schema, target)}(b, p)"]
        if isinstance(kind, dict | list) or kind in self.named:  # {"type": {...}}: the inner schema
            return self.code(kind, ind, target)
        if kind == "null":
            return [f"{ind}{target} = None"] if target is not None else []
        if kind == "boolean":  # a byte other than 0 and 1: left to fastavro
            lines = [f"{ind}if b[p] > 1:", f"{ind}    raise Unreadable('boolean')"]
            lines += [f"{ind}{target} = b[p] == 1"] if target is not None else []
            return lines + [f"{ind}p += 1"]
        if kind in ("int", "long"):
            if target is None:  # skipped: its bytes up to the one without the high bit
                return [f"{ind}v = b[p]", f"{ind}p += 1", f"{ind}if v > 0x7F:", f"{ind}    v, p = _more(b, p, v)"]
            return self._long(ind, "v") + [f"{ind}{target} = v"]
        if kind in ("float", "double"):
            size, unpack = (4, "_FLOAT") if kind == "float" else (8, "_DOUBLE")
            lines = [f"{ind}{target} = {unpack}.unpack_from(b, p)[0]"] if target is not None else []
            return lines + [f"{ind}if p + {size} > len(b):", f"{ind}    raise Unreadable('short')", f"{ind}p += {size}"]
        if kind in ("string", "bytes"):
            # past the body's end: a read after it fails, or the end is not the body's (checked last)
            lines = self._length(ind)
            if target is None:
                if kind == "string":
                    lines += [f"{ind}if not b[p:e].isascii():", f"{ind}    _utf8(b, p, e)"]
            elif kind == "string":
                lines += [
                    f"{ind}try:",
                    f"{ind}    {target} = b[p:e].decode()",
                    f"{ind}except UnicodeDecodeError:",
                    f"{ind}    raise Unreadable('utf-8') from None",
                ]
            else:
                lines.append(f"{ind}{target} = b[p:e]")
            return lines + [f"{ind}p = e"]
        raise Unreadable(f"no reader for {kind!r}")

    def function(self, schema: Any, target: str | None) -> str:
        """The name of a function ``(b, p) -> p`` (skipping) or ``(b, p) -> (value, p)``."""
        mode = "read" if target is not None else "skip"
        key = (mode, id(schema))
        if key in self.made:
            return self.made[key]
        name = self._name(mode)
        self.made[key] = name
        value = target is not None
        body: list[str] = [f"def {name}(b, p):"]
        if isinstance(schema, list):  # a union: its branch's index, then the branch
            body += self._long("    ", "v")
            for i, branch in enumerate(schema):
                body.append(f"    {'if' if i == 0 else 'elif'} v == {i}:")
                body += self.code(branch, "        ", "x" if value else None) or ["        pass"]
            body += ["    else:", "        raise Unreadable('union index')"]
            body.append("    return x, p" if value else "    return p")
        elif schema["type"] in ("record", "error"):
            if value:
                body.append("    r = {}")
            for f in schema["fields"]:
                body += self.code(f["type"], "    ", "x" if value else None)
                if value:
                    body.append(f"    r[{f['name']!r}] = x")
            body.append("    return r, p" if value else "    return p")
        else:  # an array or a map: blocks of a count (negative: a byte size follows), 0 ends
            is_map = schema["type"] == "map"
            inner = schema["values"] if is_map else schema["items"]
            if value:
                body.append("    out = {}" if is_map else "    out = []")
            body += ["    while True:"]
            body += self._long("        ", "n")
            body += ["        if n == 0:", "            break", "        if n < 0:", "            n = -n"]
            body += self._long("            ", "v")
            body.append("        for _ in range(n):")
            if is_map:
                body += self.code("string", "            ", "k" if value else None)
            body += self.code(inner, "            ", "x" if value else None) or ["            pass"]
            if value:
                body.append("            out[k] = x" if is_map else "            out.append(x)")
            body.append("    return out, p" if value else "    return p")
        self.lines += body + [""]
        return name


def _named(schema: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined in ``schema``, by full name."""
    if isinstance(schema, list):
        for s in schema:
            _named(s, out)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
            out.setdefault(schema["name"], schema)
        for f in schema.get("fields", ()):
            _named(f["type"], out)
        for k in ("items", "values"):
            if k in schema:
                _named(schema[k], out)
        if isinstance(schema.get("type"), dict | list):
            _named(schema["type"], out)
    return out


def compile_projection(parsed: dict, wanted: Sequence[str]) -> Callable[[bytes, int], dict] | None:
    """A function ``(body, start) -> {field: value}`` reading the ``wanted`` top-level fields of
    a record of the parsed (``fastavro.parse_schema``) record schema ``parsed`` from ``body`` at
    ``start`` (logical types not applied), skipping every other field, the body read to its last
    byte (``Unreadable`` otherwise); None for a schema that is not a record, lacks a wanted field,
    or has a type this does not read."""
    return _compile(parsed, wanted, logical=False)


def compile_reader(parsed: dict) -> Callable[[bytes, int], dict] | None:
    """A function ``(body, start) -> record`` reading the whole record of the parsed record
    schema ``parsed`` from ``body`` at ``start`` as fastavro's ``schemaless_reader`` reads it
    (logical types applied), the body read to its last byte (``Unreadable`` otherwise, and for
    whatever fastavro might read differently: the caller then asks fastavro); None for a schema
    that is not a record or has a type or logical type this does not read."""
    if not isinstance(parsed, dict):
        return None
    return _compile(parsed, [f["name"] for f in parsed.get("fields", ())], logical=True)


def _compile(parsed: dict, wanted: Sequence[str], logical: bool) -> Callable[[bytes, int], dict] | None:
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    names = [f["name"] for f in parsed["fields"]]
    if any(w not in names for w in wanted):
        return None
    compiler = _Compiler(_named(parsed, {}), logical)
    lines = ["def project(b, p):", "    r = {}"]
    try:
        for f in parsed["fields"]:
            target = "x" if f["name"] in wanted else None
            lines += compiler.code(f["type"], "    ", target)
            if target is not None:
                lines.append(f"    r[{f['name']!r}] = x")
    except Unreadable:
        return None
    lines += ["    if p != len(b):", "        raise Unreadable('length')", "    return r", ""]
    source = "\n".join(compiler.lines + lines)
    scope: dict[str, Any] = {
        "Unreadable": Unreadable,
        "_more": _more,
        "_utf8": _utf8,
        "_FLOAT": _FLOAT,
        "_DOUBLE": _DOUBLE,
        "_EPOCH": _EPOCH,
        "_TD": timedelta,
        **compiler.consts,
    }
    exec(compile(source, f"<{'reader' if logical else 'projection'} of {parsed.get('name')}>", "exec"), scope)
    project = scope["project"]

    def read(body: bytes, start: int = 0) -> dict:
        try:
            return project(body, start)
        except (IndexError, struct.error, RecursionError, OverflowError) as exc:
            raise Unreadable(f"{type(exc).__name__}: {exc}") from None

    return read
