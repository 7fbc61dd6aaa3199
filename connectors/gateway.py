"""The HTTP ingest gateway (``threadline serve gateway``).

``POST /contacts`` takes a contact in Threadline's own JSON shape, validates it, encodes it
with the event contract and produces it to contacts.v1. It answers 202 only after Kafka
acknowledged the record (acks=all); when Kafka does not, it answers 503 so the caller retries.
A body that does not validate gets 400 with a JSON error naming each bad field, and nothing is
produced. Provider-native webhooks (``POST /webhooks/<connector>``) are added by the
connectors built on this one.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

import schemas
from connectors.contact import ContactIn, partition_key, to_record
from schemas.codec import Codec
from threadline.catalog import CONTACTS
from threadline.errors import KafkaUnavailable, RegistryUnavailable
from threadline.kafka import send_async
from threadline.http import error_response, validation_fields
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.gateway")


def create_app(settings: Settings, *, producer_factory, codec_factory) -> FastAPI:
    """``producer_factory``/``codec_factory`` build the Kafka producer and codec at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.producer = producer_factory()
        app.state.codec = codec_factory()
        # Register the writer schema before the first request, not during it.
        app.state.codec.encode(CONTACTS.name, schemas.CONTACT, _probe_record())
        yield
        app.state.producer.flush(10)
        app.state.producer.close(10)

    app = FastAPI(title="Threadline ingest gateway", version="1", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        return error_response(400, "invalid_body", "the body does not match the contact schema",
                              validation_fields(exc))

    @app.post("/contacts", status_code=202)
    async def post_contact(request: Request):
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            return error_response(413, "body_too_large", f"body over {settings.max_body_bytes} bytes")
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/json":
            return error_response(415, "unsupported_media_type", "send application/json")
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, "malformed_json", str(exc), [{"field": "<body>", "problem": "not JSON"}])
        try:
            contact = ContactIn.model_validate(payload)
        except ValidationError as exc:
            return error_response(400, "invalid_body", "the body does not match the contact schema",
                                  validation_fields(exc))
        record = to_record(contact, datetime.now(UTC))
        codec: Codec = request.app.state.codec
        try:
            value = codec.encode(CONTACTS.name, schemas.CONTACT, record)
            meta = await send_async(request.app.state.producer, CONTACTS.name,
                                    key=partition_key(contact), value=value,
                                    headers={"connector": contact.connector, "event_id": record["event_id"]})
        except (KafkaUnavailable, RegistryUnavailable) as exc:
            log.warning("contact_not_acknowledged", event_id=record["event_id"], error=str(exc))
            return error_response(503, "not_stored", "the event store did not acknowledge; retry")
        log.info("contact_accepted", event_id=record["event_id"], topic=meta.topic,
                 partition=meta.partition, offset=meta.offset, channel=contact.channel)
        return {"event_id": record["event_id"], "topic": meta.topic, "partition": meta.partition,
                "offset": meta.offset}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def _probe_record() -> dict:
    """A valid record, used once at start-up to register the writer schema."""
    now = datetime.now(UTC)
    probe = ContactIn(provider_id="startup-probe", channel="other", occurred_at=now,
                      identities=[{"kind": "other", "value": "probe"}])
    return to_record(probe, now)


def build(settings: Settings) -> FastAPI:
    from schemas.codec import make_codec
    from threadline.kafka import make_producer

    return create_app(settings, producer_factory=lambda: make_producer(settings),
                      codec_factory=lambda: make_codec(settings))
