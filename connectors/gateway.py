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
``connectors.sink.Sink``; ``connectors.intake.Intake`` does the work of each route, this module
declares the routes, their OpenAPI document and the app. It answers 202 only after Kafka acknowledged every event of the
request and every DLQ record; 503 otherwise, so the provider retries. ``GET /webhooks/meta``
answers Meta's ``hub.challenge`` handshake and ``GET /webhooks/x`` X's CRC check.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager


from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette._utils import get_route_path

from connectors.contact import ContactIn
from connectors.intake import Intake, _headers, scope_public_url
from connectors.public_url import PublicUrls
from threadline.catalog import INGEST_DLQ
from threadline.catalog import CONTACTS
from threadline.async_producer import DeadlineProducer
from threadline import ops
from threadline import auth
from threadline.http import (
    ServerErrors,
    document_errors,
    error_response,
    error_responses,
    install_method_not_allowed,
    validation_fields,
)
from threadline.settings import Settings


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
    intake = Intake(settings, producer_factory, codec_factory, contacts_topic, dlq_topic)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await intake.start()
        yield
        await intake.stop()

    app = GatewayApp(title="Threadline ingest gateway", version="1", lifespan=lifespan)
    # "kafka" is the producer the requests use, not a client of its own: a wedged producer is not ready.
    checks = [
        ops.Check("kafka", intake.producer_reaches_kafka),
        *(c for c in ops.kafka_checks(settings) if c.name != "kafka"),
    ]
    ops.install(app, "gateway", ops.Readiness("gateway", checks))
    app.add_middleware(ServerErrors, name="gateway")
    install_method_not_allowed(app)
    auth.install_error_handler(app)
    credential = auth.connector_credential(intake.tokens)

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
        return await intake.post_contact(request, allowed)

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
        return await intake.answer_webhook(connector, request.scope, request.receive)

    async def serve_webhook(scope, receive, send) -> None:
        response = await intake.answer_webhook(scope["path_params"]["connector"], scope, receive)
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
        return intake.handshake(connector, dict(request.query_params))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    app.openapi = lambda: gateway_openapi(app)
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


def gateway_openapi(app: FastAPI) -> dict:
    """The gateway's OpenAPI document: the routes, ContactIn as the body of POST /contacts, the
    bearer scheme, and the error responses (built once)."""
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


def _public_url(request: Request, settings: Settings, connector: str) -> str:
    """The URL a routed request's provider called (tests ask for it)."""
    return scope_public_url(request.scope, _headers(request.scope)[1], PublicUrls.from_settings(settings), connector)


# Seconds from SIGTERM until the gateway process is gone: requests in flight get the produce deadline.
def shutdown_limit(settings: Settings) -> float:
    from threadline.async_producer import STOP_LIMIT

    return settings.connectors.produce_deadline_seconds + STOP_LIMIT + 2


def build(settings: Settings) -> FastAPI:
    return create_app(settings)
