"""The faust application: wires the identity rules to contacts.v1 → contacts.resolved.v1.

Processing is at-least-once (faust's exactly-once mode has open bugs); duplicates are harmless
because event ids are deterministic and every consumer is idempotent. Commit order, as faust's
consumer does it: the agent hands its output to the producer, faust flushes the producer (every
output acknowledged), and only then commits the source offsets. A record that cannot be
decoded or resolved goes to streams.dlq.v1 with its raw bytes and the reason; it never blocks
its partition and never stops the worker.
"""

from __future__ import annotations

import faust

import schemas
from schemas.codec import make_codec
from streams.dlq import dlq_headers
from streams.identity import resolve
from threadline.catalog import CONTACTS, CONTACTS_RESOLVED, EVENT_PARTITIONS, STREAMS_DLQ
from threadline.errors import FatalError
from threadline.kafka import header_list
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.streams")


def faust_broker(settings: Settings) -> str:
    return ";".join(f"kafka://{b}" for b in settings.kafka_bootstrap.split(","))


def create_app(settings: Settings, app_id: str = "threadline-identity") -> faust.App:
    datadir = settings.state_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=faust_broker(settings),
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=EVENT_PARTITIONS,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
    )
    codec = make_codec(settings)
    contacts = app.topic(CONTACTS.name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
    resolved = app.topic(CONTACTS_RESOLVED.name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
    dlq = app.topic(STREAMS_DLQ.name, key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")

    @app.agent(contacts)
    async def identity(stream):
        async for event in stream.events():
            msg = event.message
            try:
                contact = codec.decode(event.value).record
                out = resolve(contact)
                value = codec.encode(CONTACTS_RESOLVED.name, schemas.CONTACT, out)
            except (FatalError, ValueError, KeyError, TypeError) as exc:
                await dlq.send(key=CONTACTS.name.encode(), value=event.value, headers=header_list(
                               dlq_headers(reason=f"{type(exc).__name__}: {exc}", topic=msg.topic,
                                                   partition=msg.partition, offset=msg.offset,
                                                   component=app_id)))
                log.warning("record_to_dlq", topic=msg.topic, partition=msg.partition, offset=msg.offset,
                            reason=type(exc).__name__)
                continue
            await resolved.send(key=out["customer_id"].encode(), value=value,
                                headers=header_list({"event_id": out["event_id"]}))
            log.info("contact_resolved", event_id=out["event_id"], customer_id=out["customer_id"],
                     partition=msg.partition, offset=msg.offset)

    return app
