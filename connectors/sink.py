"""Where contacts go: the I/O edge shared by the gateway, the importers and the generator.

Contacts are encoded with the event contract and produced to contacts.v1, keyed by the primary
identity, with ``connector`` and ``event_id`` headers. What could not be mapped goes to
ingest.dlq.v1 as the raw bytes, keyed by connector, with ``reason``, ``connector``,
``component`` and (when known) ``where`` headers. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import schemas
from connectors.base import Rejected
from connectors.contact import ContactIn, partition_key, to_record
from threadline.catalog import CONTACTS, INGEST_DLQ
from threadline.dlq import rejected_headers
from threadline.kafka import header_list


class Sink:
    """``publish`` (the gateway, asyncio) wants a ``DeadlineProducer``; ``send`` and
    ``send_dead_letter`` (importers, generator: blocking) a ``threadline.kafka.BoundedProducer``
    (every send and wait within THREADLINE_PRODUCE_DEADLINE_SECONDS, else KafkaUnavailable) or
    a kafka-python producer."""

    def __init__(self, producer, codec, *, contacts_topic: str = CONTACTS.name, dlq_topic: str = INGEST_DLQ.name,
                 component: str = "gateway"):
        self.producer, self.codec = producer, codec
        self.contacts_topic, self.dlq_topic, self.component = contacts_topic, dlq_topic, component

    def encode(self, contact: ContactIn, recorded_at: datetime | None = None) -> tuple[bytes, bytes, dict[str, str]]:
        record = to_record(contact, recorded_at or datetime.now(UTC))
        value = self.codec.encode(self.contacts_topic, schemas.CONTACT, record)
        return partition_key(contact), value, {"connector": contact.connector, "event_id": record["event_id"]}

    def dlq_headers(self, connector: str, rejected: Rejected, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**rejected_headers(reason=rejected.reason, connector=connector, component=self.component,
                                   where=rejected.where), **(extra or {})}

    # -- asyncio (the gateway) --------------------------------------------------------------

    async def publish(self, connector: str, contacts: list[ContactIn], rejected: list[Rejected],
                      extra_headers: dict[str, str] | None = None) -> tuple[list, list]:
        """Produce everything and wait until Kafka acknowledged all of it (KafkaUnavailable if not)."""
        now = datetime.now(UTC)
        sends = []
        for c in contacts:
            key, value, headers = self.encode(c, now)
            sends.append(self.producer.send(self.contacts_topic, key=key, value=value, headers=headers))
        dlq = [self.producer.send(self.dlq_topic, key=connector.encode(), value=r.raw,
                                  headers=self.dlq_headers(connector, r, extra_headers)) for r in rejected]
        if len(sends) + len(dlq) == 1:  # one contact per request, the usual webhook: no task for a gather
            result = await (sends or dlq)[0]
            return ([result], []) if sends else ([], [result])
        results = await asyncio.gather(*sends, *dlq)
        return list(results[:len(sends)]), list(results[len(sends):])

    # -- blocking (importers, generator) -----------------------------------------------------

    def send(self, contact: ContactIn):
        key, value, headers = self.encode(contact)
        return self.producer.send(self.contacts_topic, key=key, value=value, headers=header_list(headers))

    def send_dead_letter(self, connector: str, rejected: Rejected, extra_headers: dict[str, str] | None = None):
        return self.producer.send(self.dlq_topic, key=connector.encode(), value=rejected.raw,
                                  headers=header_list(self.dlq_headers(connector, rejected, extra_headers)))
