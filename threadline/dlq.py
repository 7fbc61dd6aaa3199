"""Dead-letter records: the raw bytes, and why and where they came from, in headers.

One format for every component (gateway and importers: ``ingest.dlq.v1``; worker and
projectors: their DLQ topics): ``reason`` (one line, at most ``REASON_LIMIT`` characters),
``component``, and either where the record was read (``source_topic``, ``source_partition``,
``source_offset``) or, for a request that never reached a topic, the ``connector`` and when it
was received. Reasons name the problem, never the personal data in it; logs carry only the reason's kind
(``reason_kind``: the text before its first colon), since a reason may quote a value.

Every dead letter is made here, by one of two functions, as a ``DeadLetter`` (key, value,
headers): ``of_read_record`` (a record read from a topic: the raw bytes as read, keyed by the
source topic, one log line) and ``of_rejected_payload`` (a provider payload: keyed by the
connector). Both seal the bytes when their caller gives a ``seal`` (privacy on). Each component
sends them with the producer its commit order needs: the projectors through ``DeadLetters``
(acknowledged before their offsets move), the stream worker inside its batch's produce (before
its offsets are committed), the gateway before it answers the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from threadline.kafka import header_list
from threadline.logging import get_logger

log = get_logger("threadline.dlq")

REASON_LIMIT = 1000


def reason_text(reason: str) -> str:
    """The reason as one line of at most REASON_LIMIT characters."""
    one_line = " ".join(str(reason).split())
    return one_line if len(one_line) <= REASON_LIMIT else one_line[: REASON_LIMIT - 1] + "…"


def _read_headers(*, reason: str, topic: str, partition: int, offset: int, component: str) -> dict[str, str]:
    """Headers of a record read from ``topic`` that could not be processed."""
    return {
        "reason": reason_text(reason),
        "source_topic": topic,
        "source_partition": str(partition),
        "source_offset": str(offset),
        "component": component,
    }


def _rejected_headers(
    *, reason: str, connector: str, component: str, where: str | None = None, received_at: datetime | None = None
) -> dict[str, str]:
    """Headers of a provider payload that could not be mapped (it never reached a topic)."""
    headers = {
        "reason": reason_text(reason),
        "connector": connector,
        "component": component,
        "received_at": (received_at or datetime.now(UTC)).isoformat(),
    }
    if where:
        headers["where"] = where
    return headers


def reason_kind(reason: str) -> str:
    """What a log line may say of a reason: its first part, before any quoted value."""
    return reason_text(reason).split(":")[0][:200]


Seal = Callable[[bytes | None], tuple[bytes | None, dict[str, str]]]
"""Privacy on: the raw bytes sealed under a key of their own, and the headers naming that key
(``schemas.privacy.seal_payload``, given by the caller: the kernel knows no key store)."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of a DLQ topic, whoever sends it."""

    key: bytes
    value: bytes | None
    headers: dict[str, str]


def of_read_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    reason: str,
    component: str,
    seal: Seal | None = None,
) -> DeadLetter:
    """The dead letter of a record read from ``topic`` that could not be processed, and its log
    line (where it was read and the reason's kind, never its value)."""
    log.warning(
        "record_to_dlq",
        component=component,
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason_kind(reason),
    )
    headers = _read_headers(reason=reason, topic=topic, partition=partition, offset=offset, component=component)
    if seal is not None:
        value, sealed = seal(value)
        headers.update(sealed)
    return DeadLetter(topic.encode(), value, headers)


def of_rejected_payload(
    *,
    connector: str,
    raw: bytes,
    reason: str,
    component: str,
    where: str | None = None,
    extra: dict[str, str] | None = None,
    seal: Seal | None = None,
) -> DeadLetter:
    """The dead letter of a provider payload that could not be mapped (it never reached a topic);
    ``extra``: headers of the request the caller keeps with it."""
    value: bytes | None = raw
    headers = {
        **_rejected_headers(reason=reason, connector=connector, component=component, where=where),
        **(extra or {}),
    }
    if seal is not None:
        value, sealed = seal(raw)
        headers.update(sealed)
    return DeadLetter(connector.encode(), value, headers)


class DeadLetters:
    """Sends records read from a topic that cannot be processed to ``dlq_topic``, as they were
    read. ``producer`` is a ``threadline.kafka.BoundedProducer`` (or anything with its ``send``
    and ``wait``): ``send`` returns the future, ``wait`` blocks until Kafka acknowledged them, so
    the caller decides when (before the offsets move past the records)."""

    def __init__(
        self,
        producer: Any,
        dlq_topic: str,
        component: str,
        counted: Callable[[str], Any] | None = None,
        seal: Seal | None = None,
    ):
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.component = component
        self.counted = counted  # the DLQ counter child of a source topic (metrics.Labelled), or None
        # privacy on: the raw bytes sealed under a key of their own, and the header naming it
        # (schemas.privacy.seal_payload, given by the caller: the kernel knows no key store)
        self.seal = seal

    def send(self, *, topic: str, partition: int, offset: int, value: bytes | None, reason: str):
        if self.counted is not None:
            self.counted(topic).inc()
        letter = of_read_record(
            topic=topic,
            partition=partition,
            offset=offset,
            value=value,
            reason=reason,
            component=self.component,
            seal=self.seal,
        )
        return self.producer.send(
            self.dlq_topic, key=letter.key, value=letter.value, headers=header_list(letter.headers)
        )

    def wait(self, futures: list) -> None:
        """Every future acknowledged, within the producer's deadline (else KafkaUnavailable)."""
        self.producer.wait(futures, "dead letters")
