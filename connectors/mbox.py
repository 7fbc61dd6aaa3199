"""mbox import (``threadline ingest mbox FILE``): every message of an mbox file, mapped by the
email connector (``connectors.email.to_contact``) and produced to contacts.v1.

The file is split by hand rather than with ``mailbox.mbox`` so every message keeps the line
number it starts on (rejected messages are reported by line). ``From `` lines at the start of
the file or after a blank line separate messages; mboxrd's ``>From `` quoting is undone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from connectors import email
from connectors.base import MapContext, Rejected
from connectors.contact import ContactIn
from connectors.errors import MalformedPayload, Unmappable
from connectors.importer import numbered_lines

_QUOTED_FROM = re.compile(rb"^>(>*From )")


def split_mbox(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(line number of the ``From `` line, byte offset of the message end, raw RFC 5322 message)."""
    start, lines, prev_blank, end = None, [], True, 0
    for n, offset, line in numbered_lines(data):
        if line.startswith(b"From ") and prev_blank:
            if start is not None:
                yield start, end, _message(lines)
            start, lines = n, []
        elif start is not None:
            lines.append(_QUOTED_FROM.sub(rb"\1", line))
        prev_blank = line.strip() == b""
        end = offset
    if start is not None:
        yield start, end, _message(lines)


def _message(lines: list[bytes]) -> bytes:
    while lines and lines[-1].strip() == b"":  # the blank line before the next "From " is mbox's
        lines = lines[:-1]
    return b"".join(lines)


def records(
    data: bytes, ctx: MapContext, own_addresses: frozenset[str] = frozenset()
) -> Iterator[tuple[str, int, ContactIn | Rejected]]:
    for line, end, raw in split_mbox(data):
        where = f"line {line}"
        try:
            contact = email.to_contact(raw, ctx, own_addresses=own_addresses)
            yield where, end, contact.model_copy(update={"metadata": {**contact.metadata, "source": "mbox"}})
        except (Unmappable, MalformedPayload) as exc:
            yield where, end, Rejected(getattr(exc, "reason", None) or str(exc), raw, where)
