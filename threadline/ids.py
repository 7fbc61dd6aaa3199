"""Name-based (version 5) UUIDs as strings, the text ``str(uuid.uuid5(namespace, name))`` gives,
without building a ``uuid.UUID`` and formatting it: every deterministic event id of the stream
stages is one, several per contact."""

from __future__ import annotations

import hashlib
import uuid


def uuid5_str(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` (RFC 4122 §4.3: SHA-1 of namespace + name, version
    and variant bits set), ~3× faster."""
    h = hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).digest()
    x = (h[:6] + bytes(((h[6] & 0x0F) | 0x50,)) + h[7:8] + bytes(((h[8] & 0x3F) | 0x80,)) + h[9:16]).hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
