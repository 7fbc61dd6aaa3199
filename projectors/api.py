"""The read API (``threadline serve api``): JSON over HTTP on the read models.

Customers by id and by any identity, a customer's timeline and conversations, the support
inbox, the sales context, marketing engagement, reviews, consent and segments, projection lag;
plus the walking skeleton's contact routes. Lists page with ``limit``/``offset`` and say the
``next_offset``. Unknown ids answer 404 with a JSON error; bad parameters 400 naming them; a
projection that was never built 503; PostgreSQL down 503 ``postgres_unavailable`` with
Retry-After, within POOL_TIMEOUT. OpenAPI at ``/openapi.json`` (``/docs``).

Every route but ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` needs a bearer token of
THREADLINE_API_TOKENS with the scope ``ROUTE_SCOPES`` names (threadline/auth.py): 401 without
one, 403 without the scope; ``admin`` reads everything.

A merged customer's old id answers with the survivor (``customer_id``) and says so
(``requested_id``); the survivor lists the ids merged into it (``merged_ids``).
"""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

import psycopg
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from psycopg.rows import dict_row
from pydantic import BaseModel, BeforeValidator, Field
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from projectors import consent as consent_ledger
from projectors import definitions, judgements, lookup, profiles
from projectors.framework import live_schema
from threadline import auth, ops
from threadline.errors import ThreadlineError
from threadline.http import error_response, error_responses, guard, validation_fields
from threadline.logging import get_logger
from threadline.settings import Settings

CONTACT_COLUMNS = ("event_id, customer_id, connector, channel, direction, occurred_at, recorded_at, text, "
                   "record->'facts' as facts, record->'identities' as identities, "
                   "source_topic, source_partition, source_offset")

SlaState = Literal["running", "breached", "met", "none"]
ConversationState = Literal["open", "resolved", "merged_into"]
WaitingOn = Literal["agent", "customer", "nobody"]
IdentityKind = Literal["email", "phone", "social", "account", "cookie", "device", "chat_visitor", "other"]
# PostgreSQL down: a request waits at most this long for a connection, then answers 503 with
# Retry-After (a client's or a provider's timeout is longer); the pool reconnects in the background.
POOL_TIMEOUT = 1.0
log = get_logger("threadline.api")
RETRY_AFTER = "5"
Limit = Query(50, ge=1, le=500, description="page size")
# A calendar day as the document says (format: date), not whatever pydantic would take (0, say).
IsoDate = Annotated[date, BeforeValidator(lambda v: _iso_date(v))]
MAX_OFFSET = 1_000_000_000
Offset = Query(0, ge=0, le=MAX_OFFSET, description="rows to skip")

# Which audience may read what, by what each route returns: a customer's contacts, card, timeline
# and conversations, and the inbox are support's; the 360 view sales'; engagement, reviews,
# consent and segments marketing's; projection lag (no customer data) any valid token's.
ROUTE_SCOPES = {
    "/contacts/{event_id}": "support", "/customers/{customer_id}/contacts": "support", "/contacts": "support",
    "/customers/by-identity": "support", "/customers/{customer_id}": "support",
    "/customers/{customer_id}/timeline": "support", "/customers/{customer_id}/conversations": "support",
    "/conversations/{conversation_id}": "support", "/support/inbox": "support",
    "/sales/customers/{customer_id}": "sales",
    "/marketing/engagement": "marketing", "/marketing/response-times": "marketing",
    "/marketing/reviews": "marketing", "/marketing/customers/{customer_id}/consent": "marketing",
    "/marketing/customers/{customer_id}/segments": "marketing",
    "/marketing/customers/{customer_id}/consent-ledger": "marketing",
    "/projections": auth.ANY,
    "/privacy/access": "admin", "/privacy/erasures": "admin",  # docs/privacy.md: whole customers, and a write
}


IDENTITY_PATTERN = r"^[^:]+:[\s\S]+$"  # kind:[platform:]value (schemas.privacy.parse_identity)


class ErasureRequest(BaseModel):
    identity: str = Field(min_length=3, max_length=400, pattern=IDENTITY_PATTERN,
                          description="kind:[platform:]value of any identity of the customer")


class NotFound(Exception):
    def __init__(self, what: str):
        self.what = what


def create_app(settings: Settings) -> FastAPI:
    support, sales, marketing = (live_schema(settings, p) for p in ("support", "sales", "marketing"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(settings.effective_pg_api_dsn, min_size=1, max_size=8, open=False,
                                   timeout=POOL_TIMEOUT, check=AsyncConnectionPool.check_connection,
                                   kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": 3})
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        yield
        await pool.close()

    app = FastAPI(title="Threadline read API", version="2", lifespan=lifespan,
                  description="Read models for support, sales and marketing, built from the event log.")
    auth.install(app, auth.api_tokens(settings), ROUTE_SCOPES, errors=(400, 404, 503))
    guard(app, "api")

    async def postgres_answers() -> None:
        """``select 1`` on a connection of the pool the routes use."""
        pool = getattr(app.state, "pool", None)
        if pool is None:
            raise RuntimeError("the connection pool is not open yet")
        async with pool.connection(timeout=ops.PROBE_TIMEOUT) as conn:
            await conn.execute("select 1")

    ops.install(app, "api", ops.Readiness("api", [ops.Check("postgres", postgres_answers)]))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        return error_response(400, "invalid_parameters", "the request parameters are not valid",
                              validation_fields(exc))

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound):
        return error_response(404, "not_found", f"no {exc.what}")

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def _not_built(_req: Request, exc: psycopg.errors.UndefinedTable):
        return error_response(503, "projection_not_built",
                              "the projection has not been built yet (run `threadline project`)")

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def _postgres_unavailable(_req: Request, exc: Exception):
        response = error_response(503, "postgres_unavailable",
                                  "postgres is not answering; retry later")
        response.headers["Retry-After"] = RETRY_AFTER
        return response

    async def rows(request: Request, sql: str, params=()) -> list[dict]:
        async with request.app.state.pool.connection() as conn:
            return [_jsonable(r) for r in await (await conn.execute(sql, params)).fetchall()]

    async def one(request: Request, sql: str, params=()) -> dict | None:
        found = await rows(request, sql, params)
        return found[0] if found else None

    async def resolve(request: Request, schema: str, customer_id: str) -> str:
        row = await one(request, f"select customer_id from {schema}.customers where origin_customer_id = %s",
                        (customer_id,))
        if row is None:
            raise NotFound(f"customer {customer_id}")
        return row["customer_id"]

    def page(items: list[dict], limit: int, offset: int, **extra) -> dict:
        return {**extra, "items": items, "limit": limit, "offset": offset,
                "next_offset": offset + limit if len(items) == limit else None}

    # -- the walking skeleton's contacts ------------------------------------------------------
    @app.get("/contacts/{event_id}", tags=["contacts"])
    async def get_contact(event_id: uuid.UUID, request: Request):
        row = await one(request, f"select {CONTACT_COLUMNS} from skeleton.contacts where event_id = %s",
                        (str(event_id),))
        if row is None:
            raise NotFound(f"contact {event_id}")
        return row

    @app.get("/customers/{customer_id}/contacts", tags=["contacts"])
    async def customer_contacts(customer_id: str, request: Request, limit: int = Limit, offset: int = Offset):
        items = await rows(request, f"select {CONTACT_COLUMNS} from skeleton.contacts where customer_id = %s"
                                    " order by occurred_at, event_id limit %s offset %s", (customer_id, limit, offset))
        if not items and offset == 0:
            raise NotFound(f"customer {customer_id}")
        return {"customer_id": customer_id, "items": items, "limit": limit, "offset": offset}

    @app.get("/contacts", tags=["contacts"])
    async def list_contacts(request: Request, limit: int = Limit, offset: int = Offset):
        items = await rows(request, f"select {CONTACT_COLUMNS} from skeleton.contacts order by occurred_at, event_id"
                                    " limit %s offset %s", (limit, offset))
        return {"items": items, "limit": limit, "offset": offset}

    # -- customers (support's context card) ---------------------------------------------------
    async def card(request: Request, requested: str, customer_id: str, include_merged: bool = False) -> dict:
        """The card of projectors/profiles.py: the same queries and shape as customer-profiles.v1."""
        params = {"ids": [customer_id]}
        parts = {name: await rows(request, sql, params) for name, sql in profiles.queries(support).items()}
        return profiles.card(customer_id, requested, profiles.by_customer(parts).get(customer_id, {}), include_merged)

    @app.get("/customers/by-identity", tags=["customers"])
    async def customer_by_identity(request: Request, kind: IdentityKind, value: str = Query(min_length=1, max_length=400),
                                   platform: str | None = Query(None, max_length=64)):
        """The customer an identity belongs to today, the value written any way ingest accepts it
        (projectors/lookup.py): ``matched`` is the stored identity found, ``looked_up`` what was
        searched; 404 names the normalised value."""
        try:
            look = lookup.normalise(kind, value, platform, settings.default_phone_region)
        except lookup.BadIdentity as exc:
            return error_response(400, "invalid_parameters", "the request parameters are not valid",
                                  [{"field": exc.field, "problem": exc.problem}])
        sql, params = lookup.lookup_sql(support, look)
        found = await rows(request, sql, params)
        if not found:
            raise NotFound(f"customer with {look.describe()}")
        best = found[0]
        out = await card(request, best["customer_id"], best["customer_id"])
        out["matched"] = {k: best[k] for k in ("kind", "platform", "value")}
        out["looked_up"] = {"kind": look.kind, "value": look.value, "platform": look.platform}
        out["also_matching"] = list(dict.fromkeys(f["customer_id"] for f in found if f["customer_id"] != best["customer_id"]))
        return out

    @app.get("/customers/{customer_id}", tags=["customers"])
    async def get_customer(customer_id: str, request: Request,
                           include_merged: bool = Query(False, description="also list merged-away conversations")):
        """The context card: identities, facts, language, last order, conversations, sentiment."""
        return await card(request, customer_id, await resolve(request, support, customer_id), include_merged)

    @app.get("/customers/{customer_id}/timeline", tags=["support"])
    async def timeline(customer_id: str, request: Request, channel: str | None = None,
                       limit: int = Limit, offset: int = Offset):
        """Every contact across channels in event-time order; ``channel_switch`` marks a change."""
        cid = await resolve(request, support, customer_id)
        items = await rows(request, f"select * from {support}.timeline where customer_id = %s"
                                    " and (%s::text is null or channel = %s)"
                                    " order by occurred_at, event_id limit %s offset %s",
                           (cid, channel, channel, limit, offset))
        return page(items, limit, offset, customer_id=cid)

    @app.get("/customers/{customer_id}/conversations", tags=["support"])
    async def customer_conversations(customer_id: str, request: Request, state: ConversationState | None = None,
                                     limit: int = Limit, offset: int = Offset):
        cid = await resolve(request, support, customer_id)
        items = await rows(request, f"select * from {support}.conversation_state where customer_id = %s"
                                    " and (%s::text is null or state = %s)"
                                    " order by last_event_at desc, conversation_id limit %s offset %s",
                           (cid, state, state, limit, offset))
        return page(items, limit, offset, customer_id=cid)

    @app.get("/conversations/{conversation_id}", tags=["support"])
    async def get_conversation(conversation_id: str, request: Request):
        conv = await one(request, f"select * from {support}.conversation_state where conversation_id = %s",
                         (conversation_id,))
        if conv is None:
            raise NotFound(f"conversation {conversation_id}")
        conv["events"] = await rows(request, f"select event_id, event_type, version, occurred_at, channel,"
                                             f" previous_channel, contact_event_id, waiting_on, sla_kind, sla_due_at,"
                                             f" sla_elapsed_seconds, sla_state from {support}.conversation_events"
                                             " where conversation_id = %s order by version, occurred_at, event_id",
                                    (conversation_id,))
        conv["contacts"] = await rows(request, f"select contact_event_id as event_id, occurred_at, channel"
                                               f" from {support}.conversation_messages where conversation_id = %s"
                                               " order by occurred_at, contact_event_id", (conversation_id,))
        return conv

    @app.get("/support/inbox", tags=["support"])
    async def inbox(request: Request, sla_state: SlaState | None = None, channel: str | None = None,
                    waiting_on: WaitingOn | None = None, limit: int = Limit, offset: int = Offset):
        """Open conversations, the most urgent SLA first."""
        items = await rows(request, f"select * from {support}.inbox where (%s::text is null or sla_state = %s)"
                                    " and (%s::text is null or channel = %s) and (%s::text is null or waiting_on = %s)"
                                    " order by sla_due_at nulls last, last_event_at, conversation_id"
                                    " limit %s offset %s",
                           (sla_state, sla_state, channel, channel, waiting_on, waiting_on, limit, offset))
        return page(items, limit, offset)

    # -- sales --------------------------------------------------------------------------------
    @app.get("/sales/customers/{customer_id}", tags=["sales"])
    async def sales_context(customer_id: str, request: Request):
        """Customer 360 for account work, with the sentiment trend and "talk to support first"."""
        cid = await resolve(request, sales, customer_id)
        row = await one(request, f"select * from {sales}.customer_360 where customer_id = %s", (cid,))
        if row is None:
            raise NotFound(f"customer {customer_id}")
        flag = judgements.talk_to_support_first(open_conversations=row["open_conversations"],
                                           breached_slas_7d=row["breached_slas_7d"],
                                           support_contacts_7d=row["support_contacts_7d"],
                                           sentiment_7d=row["sentiment_7d"],
                                           sentiment_prior_23d=row["sentiment_prior_23d"])
        sentiment = definitions.Sentiment(row["sentiment_latest"], row["sentiment_7d"], row["sentiment_prior_23d"],
                                          row["sentiment_30d"])
        return {**row, "requested_id": customer_id, "sentiment": sentiment.as_dict(),
                "sentiment_trend": sentiment.trend,
                "talk_to_support_first": flag.flag, "talk_to_support_first_reasons": flag.reasons}

    # -- marketing ----------------------------------------------------------------------------
    @app.get("/marketing/engagement", tags=["marketing"])
    async def engagement(request: Request, from_: IsoDate | None = Query(None, alias="from"),
                         to: IsoDate | None = Query(None, description="exclusive"), channel: str | None = None,
                         limit: int = Limit, offset: int = Offset):
        """Contacts per channel per day (UTC days)."""
        if from_ and to and to <= from_:
            return error_response(400, "invalid_parameters", "to must be after from",
                                  [{"field": "to", "problem": "not after from"}])
        items = await rows(request, f"select * from {marketing}.engagement_daily where (%s::date is null or day >= %s)"
                                    " and (%s::date is null or day < %s) and (%s::text is null or channel = %s)"
                                    " order by day, channel limit %s offset %s",
                           (from_, from_, to, to, channel, channel, limit, offset))
        return page(items, limit, offset)

    @app.get("/marketing/response-times", tags=["marketing"])
    async def response_times(request: Request):
        """How fast answers came per channel (seconds, from the SLA clocks)."""
        return {"items": await rows(request, f"select * from {marketing}.response_times order by channel")}

    @app.get("/marketing/reviews", tags=["marketing"])
    async def reviews(request: Request, min_rating: int | None = Query(None, ge=1, le=5),
                      max_rating: int | None = Query(None, ge=1, le=5), customer_id: str | None = None,
                      limit: int = Limit, offset: int = Offset):
        cid = await resolve(request, marketing, customer_id) if customer_id else None
        items = await rows(request, f"select * from {marketing}.reviews where (%s::int is null or rating >= %s)"
                                    " and (%s::int is null or rating <= %s) and (%s::text is null or customer_id = %s)"
                                    " order by occurred_at desc, event_id limit %s offset %s",
                           (min_rating, min_rating, max_rating, max_rating, cid, cid, limit, offset))
        return page(items, limit, offset)

    @app.get("/marketing/customers/{customer_id}/consent", tags=["marketing"])
    async def consent(customer_id: str, request: Request):
        """The latest consent signal per channel and purpose."""
        cid = await resolve(request, marketing, customer_id)
        items = await rows(request, f"select channel, purpose, granted, source, signal_at, event_id"
                                    f" from {marketing}.consent_latest where customer_id = %s order by channel, purpose",
                           (cid,))
        return {"customer_id": cid, "items": items}

    async def consent_signals(request: Request, cid: str) -> list[consent_ledger.Signal]:
        return [consent_ledger.from_row(r) for r in await rows(
            request, f"select x->>'purpose' as purpose, coalesce(x->>'channel', 'any') as channel,"
                     " (x->>'granted')::boolean as granted, x->>'source' as source, c.occurred_at as signal_at,"
                     " c.event_id::text as event_id, c.channel as contact_channel, c.connector"
                     f" from {marketing}.v_contacts c cross join lateral jsonb_array_elements(c.consent) x"
                     " where c.customer_id = %s and x ? 'purpose' and x ? 'granted'", (cid,))]

    @app.get("/marketing/customers/{customer_id}/consent-ledger", tags=["marketing"])
    async def consent_ledger_route(customer_id: str, request: Request):
        """Every consent signal of the customer in event time, each with the contact that carried it
        (evidence), and the latest per purpose and channel (projectors/consent.py)."""
        cid = await resolve(request, marketing, customer_id)
        signals = await consent_signals(request, cid)
        return {"customer_id": cid, "ledger": [x.as_json() for x in consent_ledger.ledger(signals)],
                "current": [x.as_json() for _, x in sorted(consent_ledger.current(signals).items())],
                "marketing_withdrawn": consent_ledger.withdrawn(signals)}

    @app.get("/marketing/customers/{customer_id}/segments", tags=["marketing"])
    async def customer_segments(customer_id: str, request: Request):
        """Segments of a customer; none, and no signals, for a customer whose latest marketing
        consent signal withdrew it (the consent ledger)."""
        cid = await resolve(request, marketing, customer_id)
        if consent_ledger.withdrawn(await consent_signals(request, cid)):
            return {"customer_id": cid, "segments": [], "signals": None, "consent": "withdrawn"}
        row = await one(request, f"select * from {marketing}.customer_signals where customer_id = %s", (cid,))
        if row is None:
            raise NotFound(f"customer {customer_id}")
        signals = judgements.Signals(row["last_rating"], row["sentiment_30d"], row["inbound_90d"],
                                row["social_inbound_90d"], row["first_channel"])
        return {"customer_id": cid, "segments": judgements.segments(signals), "signals": row}

    # -- privacy (docs/privacy.md): admin only (not in ROUTE_SCOPES) ----------------------------
    @app.get("/privacy/access", tags=["privacy"],
             responses=error_responses(400, 401, 403, 404, 503, _404="no customer holds the identity"))
    async def privacy_access(identity: str = Query(min_length=3, max_length=400, pattern=IDENTITY_PATTERN,
                                                   description="kind:[platform:]value, e.g. email:giulia@example.it")):
        """Right of access: one JSON bundle of what the read model holds about the customer of an
        identity: contacts, conversations, conversation events, identities, identity events, facts."""
        import json

        from projectors.erasure import NotFound as NoCustomer
        from projectors.erasure import run_export

        try:
            data = await run_in_threadpool(run_export, settings, identity)
        except ValueError as exc:
            return error_response(400, "invalid_parameters", "the request parameters are not valid",
                                  [{"field": "identity", "problem": str(exc)}])
        except NoCustomer:
            raise NotFound("customer with that identity")
        except (psycopg.OperationalError, ThreadlineError) as exc:
            log.warning("privacy_access_unavailable", error=type(exc).__name__)
            return error_response(503, "unavailable", "the read model or the key store is not available; retry")
        return json.loads(json.dumps(data, default=str))

    @app.post("/privacy/erasures", tags=["privacy"],
              responses=error_responses(400, 401, 403, 404, 409, 503, _404="no customer holds the identity",
                                        _400="not an identity",
                                        _409="privacy (sealing) is off: nothing could be shredded"))
    async def privacy_erase(body: ErasureRequest):
        """Erase the customer of an identity (``threadline privacy erase``): the data keys of every
        identity of its component destroyed, its read-model rows dropped, its compacted keys
        tombstoned, an erased event written. The answer has ids and counts only. Needs the
        projections' owner role (THREADLINE_PG_DSN) and Kafka."""
        from projectors.erasure import NotFound as NoCustomer
        from projectors.erasure import PrivacyOff, run_erase

        try:
            report = await run_in_threadpool(run_erase, settings, body.identity, requested_by="api")
        except ValueError as exc:
            return error_response(400, "invalid_body", "the body does not name an identity",
                                  [{"field": "identity", "problem": str(exc)}])
        except PrivacyOff as exc:
            return error_response(409, "privacy_off", str(exc))
        except NoCustomer:
            raise NotFound("customer with that identity")
        except (psycopg.OperationalError, ThreadlineError) as exc:
            log.warning("privacy_erasure_unavailable", error=type(exc).__name__)
            return error_response(503, "unavailable", "Kafka, PostgreSQL or the key store is not available; the "
                                  "erasure may be partial: send it again")
        return report.as_json()

    # -- operations ---------------------------------------------------------------------------
    @app.get("/projections", tags=["operations"])
    async def projections():
        """Each projector's lag: events and seconds behind its topics."""
        from projectors.lag import projection_lag

        lags = await run_in_threadpool(projection_lag, settings, None, settings.effective_pg_api_dsn)
        return {"items": [_jsonable(vars(lag)) for lag in lags]}

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        return {"status": "ok"}

    return app


def _iso_date(value):
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, (datetime, date)):
            v = v.isoformat()
        elif isinstance(v, uuid.UUID):
            v = str(v)
        elif isinstance(v, Decimal):
            v = float(v)
        out[k] = v
    return out
