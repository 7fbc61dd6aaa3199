"""Dead-letter records: the raw bytes, and why, where they came from, in headers."""

from __future__ import annotations


def dlq_headers(*, reason: str, topic: str, partition: int, offset: int, component: str) -> dict[str, str]:
    return {
        "reason": reason[:1000],
        "source_topic": topic,
        "source_partition": str(partition),
        "source_offset": str(offset),
        "component": component,
    }
