"""The HTTP ingest gateway (``threadline serve gateway``).

``POST /contacts`` takes a contact in Threadline's own JSON shape, validates it, encodes it
with the event contract and produces it to contacts.v1. It answers 202 only after Kafka
acknowledged the record (acks=all); when Kafka does not, it answers 503 so the caller retries.
It needs ``Authorization: Bearer <token>`` with a token of THREADLINE_CONTACT_TOKENS (401
without one), and the contact's ``connector`` must be one the token is bound to (403 otherwise:
a chat widget's token cannot write ``twilio`` contacts). A body that does not validate gets 400
with a JSON error naming each bad field (at most ``threadline.http.MAX_FIELDS`` of them), and
nothing is produced.

``POST /webhooks/<connector>`` takes each provider's own payload and headers unchanged
(``connectors.table``): the decision is ``connectors.webhooks.handle`` (pure), the produce is
``connectors.sink.Sink``. It answers 202 only after Kafka acknowledged every event of the
request and every DLQ record; 503 otherwise, so the provider retries. ``GET /webhooks/meta``
answers Meta's ``hub.challenge`` handshake and ``GET /webhooks/x`` X's CRC check.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette._utils import get_route_path
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import schemas
from connectors import meta as meta_connector
from connectors import x as x_connector
from connectors.base import MapContext, WebhookRequest
from connectors.contact import ContactIn, event_id, to_record
from connectors.public_url import FORWARDED_HEADERS, PublicUrls, public_url
from connectors.table import CONNECTORS, SECRET_NAMES
from threadline.secrets import secret
from connectors.sink import Sink
from connectors.webhooks import handle
from threadline.catalog import INGEST_DLQ
from threadline.catalog import CONTACTS
from schemas.keystore import KeyStoreUnavailable, make_keyring
from threadline.errors import KafkaUnavailable, RegistryUnavailable
from threadline.async_producer import DeadlineProducer
from threadline import metrics, ops
from threadline import auth
from threadline.http import (
    BadJson,
    ServerErrors,
    document_errors,
    error_response,
    error_responses,
    install_method_not_allowed,
    load_json,
    validation_fields,
)
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.gateway")


def create_app(
    settings: Settings,
    *,
    producer_factory=None,
    codec_factory=None,
    contacts_topic: str = CONTACTS.name,
    dlq_topic: str = INGEST_DLQ.name,
) -> GatewayApp:
    """``producer_factory``/``codec_factory`` build the producer (a ``DeadlineProducer`` unless
    given) and the codec at start-up; the topics default to the catalog's (tests give throw-away ones).

    Kafka outages: every produce answers within ``produce_deadline_seconds``, 503 + Retry-After
    when Kafka did not acknowledge (providers retry); /readyz asks the producer in use. SIGTERM:
    uvicorn stops taking requests, lets the running ones finish (each bounded by the deadline) and
    the producer stops within STOP_LIMIT: the process is gone within SHUTDOWN_LIMIT seconds."""
    if producer_factory is None:
        producer_factory = lambda: DeadlineProducer(settings)  # noqa: E731
    if codec_factory is None:
        from schemas.codec import make_codec

        codec_factory = lambda: make_codec(settings)  # noqa: E731
    retry_after = {"Retry-After": str(settings.connectors.retry_after_seconds)}
    secrets = {name: secret(settings.connectors, name) for name in SECRET_NAMES}
    unsigned = sorted(c.name for c in CONNECTORS.values() if not secrets.get(c.secret))
    produced = metrics.EVENTS_PRODUCED.labels("gateway", contacts_topic)
    produced_dlq = metrics.EVENTS_PRODUCED.labels("gateway", dlq_topic)
    dead_lettered = metrics.DLQ.labels("gateway", contacts_topic)
    contacts_by = metrics.Labelled(metrics.GATEWAY_CONTACTS)  # (connector, outcome)
    tokens = auth.contact_tokens(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.producer = producer_factory()
        await app.state.producer.start()
        app.state.codec = codec_factory()
        app.state.sink = Sink(
            app.state.producer,
            app.state.codec,
            contacts_topic=contacts_topic,
            dlq_topic=dlq_topic,
            keyring=make_keyring(settings, cached=True),
        )
        # Register the writer schema and load the language models before the first request, not during it.
        app.state.codec.encode(contacts_topic, schemas.CONTACT, _probe_record())
        base_ctx.language_detector().warm()
        if unsigned:
            log.warning(
                "connectors_without_secret",
                connectors=unsigned,
                hint="their webhooks answer 401 until a signing secret is configured",
            )
        if not tokens:
            log.warning(
                "contacts_without_tokens",
                hint="POST /contacts answers 401 until THREADLINE_CONTACT_TOKENS (or _FILE) names a token",
            )
        yield
        await app.state.producer.close()

    async def producer_reaches_kafka():
        await app.state.producer.probe()

    app = GatewayApp(title="Threadline ingest gateway", version="1", lifespan=lifespan)
    # "kafka" is the producer the requests use, not a client of its own: a wedged producer is not ready.
    checks = [ops.Check("kafka", producer_reaches_kafka), *(c for c in ops.kafka_checks(settings) if c.name != "kafka")]
    ops.install(app, "gateway", ops.Readiness("gateway", checks))
    app.add_middleware(ServerErrors, name="gateway")
    install_method_not_allowed(app)
    auth.install_error_handler(app)
    credential = auth.connector_credential(tokens)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        return error_response(400, "invalid_body", "the body does not match the contact schema", validation_fields(exc))

    @app.post(
        "/contacts",
        status_code=202,
        summary="A contact in Threadline's own JSON shape",
        responses={
            202: {
                "description": "stored: Kafka acknowledged it",
                "content": {"application/json": {"schema": ACCEPTED_SCHEMA}},
            },
            **error_responses(400, 401, 403, 413, 415, 503, _403="the token is not bound to the contact's connector"),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ContactIn"}}},
            },
            "security": [{"bearer": []}],
        },
    )
    async def post_contact(request: Request, allowed: frozenset[str] = Depends(credential)):
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
        sink: Sink = request.app.state.sink
        try:
            [(key, value, headers)] = await sink.encode_all([contact], datetime.now(UTC))
            meta = await request.app.state.producer.send(contacts_topic, key=key, value=value, headers=headers)
        except (KafkaUnavailable, RegistryUnavailable, KeyStoreUnavailable) as exc:
            contacts_by(contact.connector, "unacknowledged").inc()
            log.warning("contact_not_acknowledged", event_id=eid, error=str(exc))
            return error_response(503, "not_stored", "the event store did not acknowledge; retry", headers=retry_after)
        produced.inc()
        contacts_by(contact.connector, "accepted").inc()
        log.info(
            "contact_accepted",
            event_id=eid,
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
            channel=contact.channel,
        )
        return {"event_id": eid, "topic": meta.topic, "partition": meta.partition, "offset": meta.offset}

    base_ctx = MapContext.from_settings(settings)
    urls = PublicUrls.from_settings(settings)

    async def answer_webhook(connector: str, scope: dict, receive) -> Response:
        """The answer to ``POST /webhooks/<connector>`` from the raw ASGI request: served by
        ``GatewayApp`` before FastAPI's routing (the route below documents it and answers the same)."""
        headers, forwarded = _headers(scope)
        if _content_length(headers) > settings.connectors.max_body_bytes and connector in CONNECTORS:
            return error_response(413, "body_too_large", f"body over {settings.connectors.max_body_bytes} bytes")
        body = await _read_limited(receive, settings.connectors.max_body_bytes)
        now = datetime.now(UTC)
        qs = scope.get("query_string", b"")
        req = WebhookRequest(
            connector=connector,
            url=scope_public_url(scope, forwarded, urls, connector),
            headers=headers,
            body=body,
            received_at=now,
            query=dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {},
        )
        outcome = handle(req, secrets, base_ctx.at(now), settings.connectors.max_body_bytes)
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
        sink: Sink = app.state.sink
        try:
            acks, dlq = await sink.publish(connector, outcome.contacts, outcome.rejected)
        except (KafkaUnavailable, RegistryUnavailable, KeyStoreUnavailable) as exc:
            contacts_by(connector, "unacknowledged").inc(len(outcome.contacts) + len(outcome.rejected))
            log.warning("webhook_not_acknowledged", connector=connector, error=str(exc))
            return error_response(503, "not_stored", "the event store did not acknowledge; retry", headers=retry_after)
        if acks:
            produced.inc(len(acks))
            contacts_by(connector, "accepted").inc(len(acks))
        if dlq:
            produced_dlq.inc(len(dlq))
            dead_lettered.inc(len(dlq))
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

    @app.post(
        "/webhooks/{connector}",
        status_code=202,
        summary="A provider's webhook, its payload and headers unchanged",
        responses={
            202: {
                "description": "Kafka acknowledged every contact and every dead-lettered part",
                "content": {"application/json": {"schema": WEBHOOK_ACCEPTED_SCHEMA}},
            },
            **error_responses(
                400,
                401,
                404,
                413,
                415,
                503,
                _400="not the provider's payload (fields named)",
                _401="missing or wrong signature",
                _404="unknown connector",
                _503="Kafka did not acknowledge: retry",
            ),
        },
    )
    async def post_webhook(connector: str, request: Request):
        return await answer_webhook(connector, request.scope, request.receive)

    async def serve_webhook(scope, receive, send) -> None:
        response = await answer_webhook(scope["path_params"]["connector"], scope, receive)
        await response(scope, receive, send)

    webhook_route = next(
        r for r in app.routes if isinstance(r, APIRoute) and r.path == "/webhooks/{connector}" and "POST" in r.methods
    )
    # The same middleware the routed requests pass (500 as JSON, request metrics), nothing else.
    app.direct_webhooks(webhook_route, ServerErrors(ops.HttpMetrics(serve_webhook, "gateway"), "gateway"))

    @app.get(
        "/webhooks/{connector}",
        summary="Subscription handshakes: Meta's hub.challenge, X's CRC",
        responses={
            200: {
                "description": "Meta: the challenge (text/plain); X: the CRC response token",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            **error_responses(
                400,
                401,
                403,
                404,
                405,
                _403="hub.verify_token wrong",
                _405="a connector without a handshake: POST its webhooks",
            ),
        },
    )
    async def get_webhook(connector: str, request: Request):
        query = dict(request.query_params)
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

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            contact = ContactIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(contact.pop("$defs", {}))
            components["schemas"]["ContactIn"] = contact
            components["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token of THREADLINE_CONTACT_TOKENS"}
            }
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi
    return app


WEBHOOK_ACCEPTED_SCHEMA = {
    "type": "object",
    "required": ["accepted", "dead_lettered"],
    "properties": {"accepted": {"type": "array", "items": {"type": "object"}}, "dead_lettered": {"type": "integer"}},
}
ACCEPTED_SCHEMA = {
    "type": "object",
    "required": ["event_id", "topic", "partition", "offset"],
    "properties": {
        "event_id": {"type": "string", "format": "uuid"},
        "topic": {"type": "string"},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}


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


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with ``POST /webhooks/<connector>`` answered before FastAPI's
    own machinery: the route is documented in ``/docs`` as any other, but a request that
    matches it goes straight to ``direct`` (its handler wrapped in the same ``ServerErrors`` and
    ``HttpMetrics``). Measured in-process: FastAPI's and Starlette's layers (their middleware
    stack, matching every route in turn, the dependency solver, the request/response wrappers)
    cost more per webhook than mapping and encoding it. Everything else is routed by FastAPI."""

    _direct_route: APIRoute | None = None
    _direct: Callable | None = None

    def direct_webhooks(self, route: APIRoute, handler: Callable) -> None:
        self._direct_route, self._direct = route, handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self._direct is not None:
            connector = webhook_connector(get_route_path(scope))
            if connector is not None:
                scope["app"], scope["route"] = self, self._direct_route
                scope["path_params"] = {"connector": connector}
                await self._direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def webhook_connector(path: str) -> str | None:
    """The ``{connector}`` of ``/webhooks/{connector}`` (Starlette's ``[^/]+``), else None."""
    if path.startswith(WEBHOOKS_PREFIX):
        name = path[len(WEBHOOKS_PREFIX) :]
        if name and "/" not in name:
            return name
    return None


WEBHOOKS_PREFIX = "/webhooks/"


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


def _public_url(request: Request, settings: Settings, connector: str) -> str:
    return scope_public_url(request.scope, _headers(request.scope)[1], PublicUrls.from_settings(settings), connector)


def _probe_record() -> dict:
    """A valid record, used once at start-up to register the writer schema."""
    now = datetime.now(UTC)
    probe = ContactIn(
        provider_id="startup-probe", channel="other", occurred_at=now, identities=[{"kind": "other", "value": "probe"}]
    )
    return to_record(probe, now)


# Seconds from SIGTERM until the gateway process is gone: requests in flight get the produce deadline.
def shutdown_limit(settings: Settings) -> float:
    from threadline.async_producer import STOP_LIMIT

    return settings.connectors.produce_deadline_seconds + STOP_LIMIT + 2


def build(settings: Settings) -> FastAPI:
    return create_app(settings)
