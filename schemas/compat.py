"""Avro schema resolution, as a pure function: can a reader schema read what a writer wrote?

This follows the resolution rules of the Avro specification (records matched by field name or
alias, defaults for fields the writer lacks, the numeric and string/bytes promotions, enum
symbols, unions branch by branch). BACKWARD compatibility of a new version = the new version,
as reader, can read every earlier version; BACKWARD_TRANSITIVE = for every pair in history.
"""

from __future__ import annotations

from collections.abc import Sequence

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _norm(schema, names: dict, ns: str | None = None) -> object:
    """Inline named-type references so each node can be compared on its own.

    ``ns`` is the enclosing namespace: named types defined inside a record inherit it.
    """
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return {"type": schema}
        for candidate in ((f"{ns}.{schema}",) if ns and "." not in schema else ()) + (schema,):
            if candidate in names:
                return names[candidate]
        raise ValueError(f"unknown type reference {schema!r}")
    if isinstance(schema, list):
        return [_norm(s, names, ns) for s in schema]
    t = schema["type"]
    if isinstance(t, (dict, list)) or (
        isinstance(t, str) and t not in PRIMITIVES | {"record", "enum", "array", "map", "fixed", "error"}
    ):
        return _norm(t, names, ns)
    if t in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        own_ns = name.rsplit(".", 1)[0] if "." in name else schema.get("namespace", ns)
        out = dict(schema)
        names[name] = out
        if own_ns and "." not in name:
            names[f"{own_ns}.{name}"] = out
        if t in ("record", "error"):
            out["fields"] = [dict(f, type=_norm(f["type"], names, own_ns)) for f in schema["fields"]]
        return out
    if t == "array":
        return dict(schema, items=_norm(schema["items"], names, ns))
    if t == "map":
        return dict(schema, values=_norm(schema["values"], names, ns))
    return schema


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _type_name(s) -> str:
    if isinstance(s, list):
        return "union"
    return s["type"]


def _names_match(reader: dict, writer: dict) -> bool:
    wanted = {_short(reader["name"])} | {_short(a) for a in reader.get("aliases", [])}
    return _short(writer["name"]) in wanted


def incompatibilities(reader, writer, path: str = "") -> list[str]:
    """Every reason a reader cannot read data of this writer; empty when it can."""
    return _check(_norm(reader, {}), _norm(writer, {}), path or "<root>", set())


def _check(r, w, path: str, seen: set) -> list[str]:
    if isinstance(w, list):
        problems = []
        for branch in w:
            problems += _check(r, branch, f"{path}|{_type_name(branch)}", seen)
        return problems
    if isinstance(r, list):
        for branch in r:
            if not _check(branch, w, path, seen):
                return []
        return [f"{path}: reader union has no branch for writer type {_type_name(w)}"]
    rt, wt = r["type"], w["type"]
    if rt != wt:
        if wt in PROMOTIONS and rt in PROMOTIONS[wt]:
            return []
        return [f"{path}: writer type {wt} cannot be read as {rt}"]
    if rt in ("record", "error"):
        if not _names_match(r, w):
            return [f"{path}: record name {w['name']} does not match reader {r['name']}"]
        if (id(r), id(w)) in seen:  # a recursive type: this pair is being checked further up
            return []
        seen = seen | {(id(r), id(w))}
        problems = []
        by_name = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            candidates = [field["name"], *field.get("aliases", [])]
            wf = next((by_name[n] for n in candidates if n in by_name), None)
            if wf is None:
                if "default" not in field:
                    problems.append(f"{path}.{field['name']}: added without a default")
                continue
            problems += _check(field["type"], wf["type"], f"{path}.{field['name']}", seen)
        return problems
    if rt == "enum":
        if not _names_match(r, w):
            return [f"{path}: enum name {w['name']} does not match reader {r['name']}"]
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            return [f"{path}: enum symbols {missing} removed and the reader has no default"]
        return []
    if rt == "array":
        return _check(r["items"], w["items"], f"{path}[]", seen)
    if rt == "map":
        return _check(r["values"], w["values"], f"{path}{{}}", seen)
    if rt == "fixed":
        if not _names_match(r, w) or r["size"] != w["size"]:
            return [f"{path}: fixed {w['name']}({w['size']}) cannot be read as {r['name']}({r['size']})"]
    return []


def backward_transitive_problems(history: Sequence[tuple[int, dict]]) -> list[str]:
    """Check that every version reads the data of every earlier version.

    ``history`` is (version number, schema) pairs, oldest first.
    """
    problems = []
    for i, (rv, reader) in enumerate(history):
        for wv, writer in history[:i]:
            for p in incompatibilities(reader, writer):
                problems.append(f"v{rv} cannot read v{wv}: {p}")
    return problems
