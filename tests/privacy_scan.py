"""Search bytes for personal values in the clear and in their common encodings.

``needles(values)`` gives, for each value, the byte strings it can appear as: UTF-8 (as written,
lowercased, uppercased), UTF-16 (LE and BE), JSON with non-ASCII escaped, URL-encoded, hex, and
base64 of the UTF-8 bytes at each of the three alignments a value can have inside a longer base64
text (the characters that depend on neighbouring bytes dropped). ``scan(blob, values)`` says which
values were found, and as which encoding.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus


def _b64_variants(raw: bytes) -> list[bytes]:
    out = []
    for pad in range(3):
        enc = base64.b64encode(b"\x00" * pad + raw)
        lead = {0: 0, 1: 2, 2: 3}[pad]  # characters mixing the padding bytes with the value
        core = enc[lead:].rstrip(b"=")
        tail = (pad + len(raw)) % 3
        if tail:  # the last characters also depend on whatever follows the value
            core = core[:-1]
        if len(core) >= 6:
            out.append(core)
    return out


def needles(value: str) -> dict[str, list[bytes]]:
    forms = {value, value.lower(), value.upper()}
    found: dict[str, list[bytes]] = {}
    for form in forms:
        u8 = form.encode()
        found.setdefault("utf-8", []).append(u8)
        found.setdefault("utf-16-le", []).append(form.encode("utf-16-le"))
        found.setdefault("utf-16-be", []).append(form.encode("utf-16-be"))
        found.setdefault("json-ascii", []).append(json.dumps(form)[1:-1].encode())
        found.setdefault("url", []).extend([quote(form).encode(), quote_plus(form).encode()])
        found.setdefault("hex", []).extend([u8.hex().encode(), u8.hex().upper().encode()])
        found.setdefault("base64", []).extend(_b64_variants(u8))
        found.setdefault("base64url", []).extend(v.replace(b"+", b"-").replace(b"/", b"_") for v in _b64_variants(u8))
    return found


def scan(blob: bytes, values: list[str]) -> list[tuple[str, str]]:
    """(value, encoding) for every value found in ``blob``."""
    hits = []
    for value in values:
        for encoding, forms in needles(value).items():
            if any(f and f in blob for f in forms):
                hits.append((value, encoding))
                break
    return hits


def scan_tree(root: Path, values: list[str]) -> list[tuple[str, str, str]]:
    """(file, value, encoding) for every file under ``root`` holding a value."""
    hits = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            blob = path.read_bytes()
        except OSError:
            continue
        hits += [(str(path), v, e) for v, e in scan(blob, values)]
    return hits
