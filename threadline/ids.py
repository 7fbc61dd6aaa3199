"""Name-based (version 5) UUIDs as strings, the text ``str(uuid.uuid5(namespace, name))`` gives,
without building a ``uuid.UUID`` and formatting it: every deterministic event id of the stream
stages is one, several per contact."""

from __future__ import annotations

import hashlib
import uuid


_NAMESPACE_BYTES: dict[uuid.UUID, bytes] = {}  # a namespace's 16 bytes (``UUID.bytes`` builds them per call)
# A hex digit of the hash with the RFC 4122 variant set (its two high bits 10): 8, 9, a or b
VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid5_str(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` (RFC 4122 §4.3: SHA-1 of namespace + name, version
    and variant bits set), ~4× faster: the version (5) and the variant are set on the hex digits."""
    ns = _NAMESPACE_BYTES.get(namespace)
    if ns is None:
        ns = namespace.bytes
        if len(_NAMESPACE_BYTES) < 64:  # the project's few namespaces, not every one a caller makes up
            _NAMESPACE_BYTES[namespace] = ns
    h = hashlib.sha1(ns + name.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"
