"""Name-based (version 5) UUIDs as strings, the text ``str(uuid.uuid5(namespace, name))`` gives,
without building a ``uuid.UUID`` and formatting it: every deterministic event id of the stream
stages is one, several per contact."""

from __future__ import annotations

import hashlib
import uuid


# A hex digit of the hash with the RFC 4122 variant set (its two high bits 10): 8, 9, a or b
VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid5_str(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` (RFC 4122 §4.3: SHA-1 of namespace + name, version
    and variant bits set), ~3× faster: the hash's hex digits, the version digit (12) made 5 and
    the variant digit (16) ``VARIANT_DIGIT``'s."""
    x = hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{VARIANT_DIGIT[x[16]]}{x[17:20]}-{x[20:32]}"
