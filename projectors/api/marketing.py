"""Marketing's routes: engagement per channel and day, response times, reviews, a customer's
consent, consent ledger and segments (none while its latest marketing signal withdrew consent)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BeforeValidator

from projectors import consent as consent_ledger
from projectors import judgements
from projectors.api import queries
from projectors.api.paging import Cursor, Limit, Offset
from projectors.api.reads import NotFound, one, paged, resolve, rows, schema
from threadline.http import error_response


def _iso_date(value):
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


# A calendar day as the document says (format: date), not whatever pydantic would take (0, say).
IsoDate = Annotated[date, BeforeValidator(_iso_date)]

SCOPES = {
    "/marketing/engagement": "marketing",
    "/marketing/response-times": "marketing",
    "/marketing/reviews": "marketing",
    "/marketing/customers/{customer_id}/consent": "marketing",
    "/marketing/customers/{customer_id}/segments": "marketing",
    "/marketing/customers/{customer_id}/consent-ledger": "marketing",
}

router = APIRouter()


@router.get("/marketing/engagement", tags=["marketing"])
async def engagement(
    request: Request,
    from_: IsoDate | None = Query(None, alias="from"),
    to: IsoDate | None = Query(None, description="exclusive"),
    channel: str | None = None,
    limit: int = Limit,
    offset: int = Offset,
    cursor: str | None = Cursor,
):
    """Contacts per channel per day (UTC days)."""
    if from_ and to and to <= from_:
        return error_response(
            400, "invalid_parameters", "to must be after from", [{"field": "to", "problem": "not after from"}]
        )
    return await paged(
        request,
        queries.engagement(schema(request, "marketing")),
        queries.ENGAGEMENT,
        {"from": from_, "to": to, "channel": channel},
        limit=limit,
        offset=offset,
        cursor=cursor,
    )


@router.get("/marketing/response-times", tags=["marketing"])
async def response_times(request: Request):
    """How fast answers came per channel (seconds, from the SLA clocks)."""
    return {"items": await rows(request, queries.response_times(schema(request, "marketing")))}


@router.get("/marketing/reviews", tags=["marketing"])
async def reviews(
    request: Request,
    min_rating: int | None = Query(None, ge=1, le=5),
    max_rating: int | None = Query(None, ge=1, le=5),
    customer_id: str | None = None,
    limit: int = Limit,
    offset: int = Offset,
    cursor: str | None = Cursor,
):
    s = schema(request, "marketing")
    cid = await resolve(request, s, customer_id) if customer_id else None
    return await paged(
        request,
        queries.reviews(s),
        queries.REVIEWS,
        {"min_rating": min_rating, "max_rating": max_rating, "customer_id": cid},
        limit=limit,
        offset=offset,
        cursor=cursor,
    )


@router.get("/marketing/customers/{customer_id}/consent", tags=["marketing"])
async def consent(customer_id: str, request: Request):
    """The latest consent signal per channel and purpose."""
    s = schema(request, "marketing")
    cid = await resolve(request, s, customer_id)
    return {"customer_id": cid, "items": await rows(request, queries.consent(s), {"customer_id": cid})}


async def consent_signals(request: Request, s: str, cid: str) -> list[consent_ledger.Signal]:
    return [consent_ledger.from_row(r) for r in await rows(request, queries.consent_signals(s), {"customer_id": cid})]


@router.get("/marketing/customers/{customer_id}/consent-ledger", tags=["marketing"])
async def consent_ledger_route(customer_id: str, request: Request):
    """Every consent signal of the customer in event time, each with the contact that carried it
    (evidence), and the latest per purpose and channel (projectors/consent.py). One customer's
    whole history, as ``current`` and ``marketing_withdrawn`` need it: not a paged list."""
    s = schema(request, "marketing")
    cid = await resolve(request, s, customer_id)
    signals = await consent_signals(request, s, cid)
    return {
        "customer_id": cid,
        "ledger": [x.as_json() for x in consent_ledger.ledger(signals)],
        "current": [x.as_json() for _, x in sorted(consent_ledger.current(signals).items())],
        "marketing_withdrawn": consent_ledger.withdrawn(signals),
    }


@router.get("/marketing/customers/{customer_id}/segments", tags=["marketing"])
async def customer_segments(customer_id: str, request: Request):
    """Segments of a customer; none, and no signals, for a customer whose latest marketing
    consent signal withdrew it (the consent ledger)."""
    s = schema(request, "marketing")
    cid = await resolve(request, s, customer_id)
    if consent_ledger.withdrawn(await consent_signals(request, s, cid)):
        return {"customer_id": cid, "segments": [], "signals": None, "consent": "withdrawn"}
    row = await one(request, queries.customer_signals(s), {"customer_id": cid})
    if row is None:
        raise NotFound(f"customer {customer_id}")
    signals = judgements.Signals(
        row["last_rating"], row["sentiment_30d"], row["inbound_90d"], row["social_inbound_90d"], row["first_channel"]
    )
    return {"customer_id": cid, "segments": judgements.segments(signals), "signals": row}
