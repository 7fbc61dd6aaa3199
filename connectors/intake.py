"""What the gateway does with a request once it is routed (``connectors.gateway`` declares the
routes): validate or map it (``connectors.webhooks.handle``, pure), seal and produce it
(``connectors.sink.Sink``), and answer only after Kafka acknowledged every record: 202, or 503 +
Retry-After so the caller retries. One ``Intake`` per gateway process holds what is set up once
(secrets, tokens, public URLs, the mapping context, metrics) and, between start and stop, the
producer, codec and sink."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl

import orjson
from fastapi import Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import schemas
from connectors import meta as meta_connector
from connectors import x as x_connector
from connectors.base import MapContext, WebhookRequest
from connectors.contact import ContactIn, event_id, to_record
from connectors.public_url import FORWARDED_HEADERS, PublicUrls, public_url
from connectors.sink import Sink
from connectors.table import CONNECTORS, SECRET_NAMES
from connectors.webhooks import handle
from schemas.keystore import KeyStoreUnavailable, make_keyring
from threadline import auth, metrics
from threadline.errors import KafkaUnavailable, RegistryUnavailable
from threadline.http import BadJson, error_response, load_json, validation_fields
from threadline.logging import get_logger
from threadline.secrets import secret
from threadline.settings import Settings

log = get_logger("threadline.gateway")


class Intake:
    """The gateway's work per request, apart from HTTP routing."""

    def __init__(
        self,
        settings: Settings,
        producer_factory: Callable,
        codec_factory: Callable,
        contacts_topic: str,
        dlq_topic: str,
    ):
        self.settings = settings
        self.producer_factory, self.codec_factory = producer_factory, codec_factory
        self.contacts_topic, self.dlq_topic = contacts_topic, dlq_topic
        self.retry_after = {"Retry-After": str(settings.connectors.retry_after_seconds)}
        self.secrets = {name: secret(settings.connectors, name) for name in SECRET_NAMES}
        self.tokens = auth.contact_tokens(settings)
        self.base_ctx = MapContext.from_settings(settings)
        self.urls = PublicUrls.from_settings(settings)
        self.produced = metrics.EVENTS_PRODUCED.labels("gateway", contacts_topic)
        self.produced_dlq = metrics.EVENTS_PRODUCED.labels("gateway", dlq_topic)
        self.dead_lettered = metrics.DLQ.labels("gateway", contacts_topic)
        self.contacts_by = metrics.Labelled(metrics.GATEWAY_CONTACTS)  # (connector, outcome)
        self.producer = self.codec = self.sink = None  # between start and stop

    async def start(self) -> None:
        """The producer, codec and sink; the writer schema registered and the language models
        loaded before the first request, not during it."""
        self.producer = self.producer_factory()
        await self.producer.start()
        self.codec = self.codec_factory()
        self.sink = Sink(
            self.producer,
            self.codec,
            contacts_topic=self.contacts_topic,
            dlq_topic=self.dlq_topic,
            keyring=make_keyring(self.settings, cached=True),
        )
        self.codec.encode(self.contacts_topic, schemas.CONTACT, _probe_record())
        self.base_ctx.language_detector().warm()
        unsigned = sorted(c.name for c in CONNECTORS.values() if not self.secrets.get(c.secret))
        if unsigned:
            log.warning(
                "connectors_without_secret",
                connectors=unsigned,
                hint="their webhooks answer 401 until a signing secret is configured",
            )
        if not self.tokens:
            log.warning(
                "contacts_without_tokens",
                hint="POST /contacts answers 401 until THREADLINE_CONTACT_TOKENS (or _FILE) names a token",
            )

    async def stop(self) -> None:
        await self.producer.close()

    async def producer_reaches_kafka(self) -> None:
        """The readiness of the producer the requests use (not a client of its own)."""
        await self.producer.probe()

    async def post_contact(self, request: Request, allowed: frozenset[str]) -> Response | dict:
        """``POST /contacts``: a contact in Threadline's own JSON shape, from a token bound to ``allowed``."""
        settings = self.settings
        raw = await request.body()
        if len(raw) > settings.connectors.max_body_bytes:
            return error_response(413, "body_too_large", f"body over {settings.connectors.max_body_bytes} bytes")
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/json":
            return error_response(415, "unsupported_media_type", "send application/json")
        try:
            load_json(raw)  # not too deep, no lone surrogate: what pydantic and Avro could not take
            contact = ContactIn.model_validate_json(raw, strict=True)
        except BadJson as exc:
            return error_response(
                400,
                "malformed_json",
                "the body is not JSON we can take",
                [{"field": exc.field, "problem": exc.problem}],
            )
        except ValidationError as exc:
            return error_response(
                400, "invalid_body", "the body does not match the contact schema", validation_fields(exc)
            )
        if contact.connector not in allowed:
            return error_response(
                403,
                "connector_not_allowed",
                f"this token may not write {contact.connector!r} contacts",
                [{"field": "connector", "problem": "not a connector of this token"}],
            )
        eid = event_id(contact.connector, contact.provider_id)
        sink = self.sink
        try:
            [(key, value, headers)] = await sink.encode_all([contact], datetime.now(UTC))
            meta = await self.producer.send(self.contacts_topic, key=key, value=value, headers=headers)
        except (KafkaUnavailable, RegistryUnavailable, KeyStoreUnavailable) as exc:
            self.contacts_by(contact.connector, "unacknowledged").inc()
            log.warning("contact_not_acknowledged", event_id=eid, error=str(exc))
            return error_response(
                503, "not_stored", "the event store did not acknowledge; retry", headers=self.retry_after
            )
        self.produced.inc()
        self.contacts_by(contact.connector, "accepted").inc()
        log.info(
            "contact_accepted",
            event_id=eid,
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
            channel=contact.channel,
        )
        return {"event_id": eid, "topic": meta.topic, "partition": meta.partition, "offset": meta.offset}

    async def answer_webhook(self, connector: str, scope: dict, receive) -> Response:
        """``POST /webhooks/<connector>`` from the raw ASGI request (``GatewayApp`` serves it before
        FastAPI's routing; the documented route answers the same)."""
        settings, contacts_by = self.settings, self.contacts_by
        headers, forwarded = _headers(scope)
        if _content_length(headers) > settings.connectors.max_body_bytes and connector in CONNECTORS:
            return error_response(413, "body_too_large", f"body over {settings.connectors.max_body_bytes} bytes")
        body = await _read_limited(receive, settings.connectors.max_body_bytes)
        now = datetime.now(UTC)
        qs = scope.get("query_string", b"")
        req = WebhookRequest(
            connector=connector,
            url=scope_public_url(scope, forwarded, self.urls, connector),
            headers=headers,
            body=body,
            received_at=now,
            query=dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {},
        )
        outcome = handle(req, self.secrets, self.base_ctx.at(now), settings.connectors.max_body_bytes)
        if outcome.status != 202:
            if connector in CONNECTORS:  # an unknown connector's name is not a label value
                contacts_by(connector, "rejected").inc()
            log.info(
                "webhook_rejected",
                connector=connector if connector in CONNECTORS else "<unknown>",
                status=outcome.status,
                error=outcome.error,
            )
            return error_response(outcome.status, outcome.error, outcome.detail, outcome.fields)
        try:
            acks, dlq = await self.sink.publish(connector, outcome.contacts, outcome.rejected)
        except (KafkaUnavailable, RegistryUnavailable, KeyStoreUnavailable) as exc:
            contacts_by(connector, "unacknowledged").inc(len(outcome.contacts) + len(outcome.rejected))
            log.warning("webhook_not_acknowledged", connector=connector, error=str(exc))
            return error_response(
                503, "not_stored", "the event store did not acknowledge; retry", headers=self.retry_after
            )
        if acks:
            self.produced.inc(len(acks))
            contacts_by(connector, "accepted").inc(len(acks))
        if dlq:
            self.produced_dlq.inc(len(dlq))
            self.dead_lettered.inc(len(dlq))
            contacts_by(connector, "dead_lettered").inc(len(dlq))
        accepted = []
        for contact, meta in zip(outcome.contacts, acks):
            eid = event_id(contact.connector, contact.provider_id)
            log.info(
                "contact_accepted",
                event_id=eid,
                connector=connector,
                channel=contact.channel,
                topic=meta.topic,
                partition=meta.partition,
                offset=meta.offset,
            )
            accepted.append({"event_id": eid, "partition": meta.partition, "offset": meta.offset})
        for rejected, meta in zip(outcome.rejected, dlq):
            log.info(
                "webhook_dead_lettered",
                connector=connector,
                reason=rejected.reason,
                where=rejected.where,
                topic=meta.topic,
                offset=meta.offset,
            )
        return Accepted({"accepted": accepted, "dead_lettered": len(dlq)})

    def handshake(self, connector: str, query: dict[str, str]) -> Response | dict:
        """``GET /webhooks/<connector>``: Meta's ``hub.challenge``, X's CRC check."""
        secrets = self.secrets
        if connector == "meta":
            challenge = meta_connector.handshake(query, secrets.get("meta_verify_token"))
            if challenge is None:
                return error_response(403, "verification_failed", "hub.mode, hub.verify_token or hub.challenge wrong")
            return PlainTextResponse(challenge)
        if connector == "x":
            key = secrets.get("x_consumer_secret")
            answer = x_connector.crc(query, key) if key else None
            if answer is None:
                return error_response(
                    400 if key else 401, "crc_failed", "crc_token missing" if key else "no consumer secret configured"
                )
            return answer
        if connector in CONNECTORS:
            return error_response(405, "method_not_allowed", "POST the provider's webhook here")
        return error_response(404, "unknown_connector", f"no connector {connector!r}")


class Accepted(Response):
    """A webhook's 202: the JSON body and the headers of ``JSONResponse(content, 202)``, byte for
    byte (orjson writes the same compact JSON for these bodies: strings, integers, lists), built
    without Starlette's generic rendering and header assembly."""

    media_type = "application/json"

    def __init__(self, content: dict) -> None:
        self.status_code = 202
        self.background = None
        self.body = orjson.dumps(content)
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), (b"content-type", b"application/json")]


def _headers(scope) -> tuple[dict[str, str], dict[str, str]]:
    """The request's headers by lowercase name (a repeated one: the last value, as
    ``dict(request.headers.items())`` gave), and the X-Forwarded-* ones with a repeated
    header's values joined with ", " (``connectors.public_url`` takes the last)."""
    headers: dict[str, str] = {}
    forwarded: dict[str, str] = {}
    for k, v in scope["headers"]:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        headers[name] = value
        if name in FORWARDED_HEADERS:
            forwarded[name] = f"{forwarded[name]}, {value}" if name in forwarded else value
    return headers, forwarded


def _content_length(headers: dict[str, str]) -> int:
    try:
        return int(headers.get("content-length") or 0)
    except ValueError:
        return 0  # the body is read within the limit anyway


async def _read_limited(receive, limit: int) -> bytes:
    """The body, but never more than ``limit`` + 1 bytes held in memory (ClientDisconnect, as
    Starlette's ``request.stream()``, when the client went away)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if size > limit or not message.get("more_body", False):
            break
    return b"".join(chunks)


def scope_public_url(scope, forwarded: dict[str, str], urls: PublicUrls, connector: str) -> str:
    """The URL the provider called (``connectors.public_url``): the connector's configured public
    URL, else X-Forwarded-* from a trusted proxy, else ``public_base_url`` + path + query, else
    the URL as received. The peer is the direct one: uvicorn runs without ``proxy_headers``.

    Remembered for what it depends on (the same path, host and query come back on every request):
    the peer only counts with X-Forwarded-* headers and trusted proxies configured."""
    client = scope.get("client")
    peer = client[0] if client and forwarded and urls.trusted_proxies else None
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    return _public_url_of(
        urls,
        connector,
        scope.get("scheme", "http"),
        tuple(server) if server is not None else None,  # a list from some servers (Starlette's test client)
        scope["path"],
        scope.get("query_string", b""),
        host,
        tuple(forwarded.items()),
        peer,
    )


@lru_cache(maxsize=1024)
def _public_url_of(
    urls: PublicUrls,
    connector: str,
    scheme: str,
    server: tuple[str, int | None] | None,
    path: str,
    query: bytes,
    host: bytes | None,
    forwarded: tuple[tuple[str, str], ...],
    peer: str | None,
) -> str:
    scope = {
        "scheme": scheme,
        "server": server,
        "path": path,
        "query_string": query,
        "headers": [(b"host", host)] if host is not None else [],
    }
    return public_url(urls, connector, url=str(URL(scope=scope)), peer=peer, headers=dict(forwarded))


def _probe_record() -> dict:
    """A valid record, used once at start-up to register the writer schema."""
    now = datetime.now(UTC)
    probe = ContactIn(
        provider_id="startup-probe", channel="other", occurred_at=now, identities=[{"kind": "other", "value": "probe"}]
    )
    return to_record(probe, now)
