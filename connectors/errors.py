"""What a connector raises, placed in the tree of ``threadline.errors``.

    FatalError
    ├── SignatureError     the request is not signed by the provider (401, nothing produced)
    ├── MalformedPayload   the body is not the provider's shape (400 naming the field)
    └── Unmappable         well-formed and signed but not a contact we can map (202 + ingest.dlq.v1)

All three are fatal for that input: a retry of the same bytes fails the same way.
"""

from __future__ import annotations

from threadline.errors import FatalError


class SignatureError(FatalError):
    pass


class MalformedPayload(FatalError):
    """``field`` is the dotted path of the offending field (``entry.0.messaging``, ``<body>``)."""

    def __init__(self, field: str, problem: str, *, more: list[dict] | None = None):
        self.field, self.problem = field, problem
        self.fields = [{"field": field, "problem": problem}] + list(more or [])
        super().__init__(f"{field}: {problem}")


class Unmappable(FatalError):
    """``reason`` goes into the DLQ record's ``reason`` header."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
