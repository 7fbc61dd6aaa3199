"""Dead-letter records: the raw bytes, and why and where they came from, in headers.

One format for every component (gateway and importers: ``ingest.dlq.v1``; worker and
projectors: their DLQ topics): ``reason`` (one line, at most ``REASON_LIMIT`` characters),
``component``, and either where the record was read (``source_topic``, ``source_partition``,
``source_offset``) or, for a request that never reached a topic, the ``connector`` and when it
was received. Reasons name the problem, never the personal data in it.
"""

from __future__ import annotations

from datetime import UTC, datetime

REASON_LIMIT = 1000


def reason_text(reason: str) -> str:
    """The reason as one line of at most REASON_LIMIT characters."""
    one_line = " ".join(str(reason).split())
    return one_line if len(one_line) <= REASON_LIMIT else one_line[:REASON_LIMIT - 1] + "…"


def dlq_headers(*, reason: str, topic: str, partition: int, offset: int, component: str) -> dict[str, str]:
    """Headers of a record read from ``topic`` that could not be processed."""
    return {
        "reason": reason_text(reason),
        "source_topic": topic,
        "source_partition": str(partition),
        "source_offset": str(offset),
        "component": component,
    }


def rejected_headers(*, reason: str, connector: str, component: str, where: str | None = None,
                     received_at: datetime | None = None) -> dict[str, str]:
    """Headers of a provider payload that could not be mapped (it never reached a topic)."""
    headers = {"reason": reason_text(reason), "connector": connector, "component": component,
               "received_at": (received_at or datetime.now(UTC)).isoformat()}
    if where:
        headers["where"] = where
    return headers
