"""Where contacts go: the I/O edge shared by the gateway, the importers and the generator.

Contacts are encoded with the event contract and produced to contacts.v1, keyed by the primary
identity, with ``connector`` and ``event_id`` headers. With a key ring (privacy on,
``schemas.keystore.make_keyring``) every contact is sealed before it is encoded
(``schemas.privacy.seal_contact``): pseudonyms for identity and fact values, the personal fields
encrypted, and the record key the primary identity's pseudonym. What could not be mapped goes to
ingest.dlq.v1 as the raw bytes (sealed under a key of their own with privacy on, named by a
``sealed_key`` header), keyed by connector, with ``reason``, ``connector``, ``component`` and
(when known) ``where`` headers. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import schemas
from connectors.base import Rejected
from connectors.contact import ContactIn, partition_key, to_record
from schemas.privacy import KeyRing, record_key, seal_contact, seal_payload, subjects_of
from threadline.catalog import CONTACTS, INGEST_DLQ
from threadline.dlq import DeadLetter, of_rejected_payload
from threadline.kafka import header_list


class Sink:
    """``publish`` (the gateway, asyncio) wants a ``DeadlineProducer``; ``send`` and
    ``send_dead_letter`` (importers, generator: blocking) a ``threadline.kafka.BoundedProducer``
    (every send and wait within THREADLINE_PRODUCE_DEADLINE_SECONDS, else KafkaUnavailable) or
    a kafka-python producer."""

    def __init__(
        self,
        producer,
        codec,
        *,
        contacts_topic: str = CONTACTS.name,
        dlq_topic: str = INGEST_DLQ.name,
        component: str = "gateway",
        keyring: KeyRing | None = None,
    ):
        self.producer, self.codec, self.keyring = producer, codec, keyring
        self.contacts_topic, self.dlq_topic, self.component = contacts_topic, dlq_topic, component

    def encode(self, contact: ContactIn, recorded_at: datetime | None = None) -> tuple[bytes, bytes, dict[str, str]]:
        record = to_record(contact, recorded_at or datetime.now(UTC))
        if self.keyring is not None:
            record = seal_contact(record, self.keyring)
            key = record_key(record)
        else:
            key = partition_key(contact)
        value = self.codec.encode(self.contacts_topic, schemas.CONTACT, record)
        return key, value, {"connector": contact.connector, "event_id": record["event_id"]}

    def _needs_store(self, contacts: list[ContactIn], now: datetime) -> bool:
        """Whether sealing these asks the key store (a blocking call: the gateway makes it in a thread)."""
        if self.keyring is None:
            return False
        cached = getattr(self.keyring, "cached", None)
        return cached is None or not all(cached(subjects_of(to_record(c, now))) for c in contacts)

    async def encode_all(self, contacts: list[ContactIn], now: datetime) -> list[tuple[bytes, bytes, dict[str, str]]]:
        if self._needs_store(contacts, now):
            return await asyncio.to_thread(lambda: [self.encode(c, now) for c in contacts])
        return [self.encode(c, now) for c in contacts]

    def dead_letter(self, connector: str, rejected: Rejected, extra: dict[str, str] | None = None) -> DeadLetter:
        """A rejected payload's dead letter: the raw bytes, sealed under a key of their own when
        privacy is on (``schemas.privacy.seal_payload``; a ``sealed_key`` header)."""
        keyring = self.keyring
        return of_rejected_payload(
            connector=connector,
            raw=rejected.raw,
            reason=rejected.reason,
            component=self.component,
            where=rejected.where,
            extra=extra,
            seal=None if keyring is None else (lambda raw: seal_payload(raw, keyring)),
        )

    # -- asyncio (the gateway) --------------------------------------------------------------

    async def publish(
        self,
        connector: str,
        contacts: list[ContactIn],
        rejected: list[Rejected],
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[list, list]:
        """Produce everything and wait until Kafka acknowledged all of it (KafkaUnavailable if not)."""
        now = datetime.now(UTC)
        sends = []
        for key, value, headers in await self.encode_all(contacts, now):
            sends.append(self.producer.send(self.contacts_topic, key=key, value=value, headers=headers))

        def letters_of():
            return [self.dead_letter(connector, r, extra_headers) for r in rejected]

        # sealed dead letters get a key of their own each: the key store is asked in a thread
        letters = await asyncio.to_thread(letters_of) if rejected and self.keyring is not None else letters_of()
        dlq = [self.producer.send(self.dlq_topic, key=d.key, value=d.value, headers=d.headers) for d in letters]
        if len(sends) + len(dlq) == 1:  # one contact per request, the usual webhook: no task for a gather
            result = await (sends or dlq)[0]
            return ([result], []) if sends else ([], [result])
        results = await asyncio.gather(*sends, *dlq)
        return list(results[: len(sends)]), list(results[len(sends) :])

    # -- blocking (importers, generator) -----------------------------------------------------

    def send(self, contact: ContactIn):
        key, value, headers = self.encode(contact)
        return self.producer.send(self.contacts_topic, key=key, value=value, headers=header_list(headers))

    def send_dead_letter(self, connector: str, rejected: Rejected, extra_headers: dict[str, str] | None = None):
        d = self.dead_letter(connector, rejected, extra_headers)
        return self.producer.send(self.dlq_topic, key=d.key, value=d.value, headers=header_list(d.headers))
