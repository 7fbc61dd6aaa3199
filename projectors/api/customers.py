"""Identity and contacts lookups (support's scope): a contact by event id, a customer's contacts,
every contact (``skeleton.contacts``, the contacts projection), the customer of an identity, and
the customer card (the one of customer-profiles.v1: ``projectors/profiles.py``)."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Query, Request

from projectors import lookup, profiles
from projectors.api import queries
from projectors.api.paging import Cursor, Limit, Offset
from projectors.api.reads import NotFound, listed, one, rows_each, schema
from threadline.http import error_response

IdentityKind = Literal["email", "phone", "social", "account", "cookie", "device", "chat_visitor", "other"]

SCOPES = {
    "/contacts/{event_id}": "support",
    "/customers/{customer_id}/contacts": "support",
    "/contacts": "support",
    "/customers/by-identity": "support",
    "/customers/{customer_id}": "support",
}

router = APIRouter()


@router.get("/contacts/{event_id}", tags=["contacts"])
async def get_contact(event_id: uuid.UUID, request: Request):
    row = await one(request, queries.CONTACT, {"event_id": str(event_id)})
    if row is None:
        raise NotFound(f"contact {event_id}")
    return row


@router.get("/customers/{customer_id}/contacts", tags=["contacts"])
async def customer_contacts(
    customer_id: str, request: Request, limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor
):
    items, after = await listed(
        request,
        queries.CUSTOMER_CONTACTS,
        queries.CONTACTS,
        {"customer_id": customer_id},
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
    if not items and offset == 0 and cursor is None:
        raise NotFound(f"customer {customer_id}")
    return {"customer_id": customer_id, "items": items, "limit": limit, "offset": offset, "next_cursor": after}


@router.get("/contacts", tags=["contacts"])
async def list_contacts(request: Request, limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor):
    items, after = await listed(
        request, queries.ALL_CONTACTS, queries.CONTACTS, {}, limit=limit, offset=offset, cursor=cursor
    )
    return {"items": items, "limit": limit, "offset": offset, "next_cursor": after}


async def card_of(
    request: Request, first: str, ids: str, params, requested: str | None, include_merged: bool = False
) -> tuple[list[dict], dict | None]:
    """The rows of query ``first`` and the card (projectors/profiles.py: the same queries and shape as
    customer-profiles.v1) of the customer the SQL array ``ids`` names (the first ``customer_id`` of
    ``first``'s rows), all in one pipeline: one checkout, one round trip. The card is None when
    ``first`` finds nobody; ``requested`` None: the id the card is for."""
    s = schema(request, "support")
    parts = await rows_each(request, {"first": first, **profiles.queries(s, ids)}, params)
    found = parts.pop("first")
    if not found:
        return found, None
    cid = found[0]["customer_id"]
    rows = profiles.by_customer(parts).get(cid, {})
    return found, profiles.card(cid, cid if requested is None else requested, rows, include_merged)


@router.get("/customers/by-identity", tags=["customers"])
async def customer_by_identity(
    request: Request,
    kind: IdentityKind,
    value: str = Query(min_length=1, max_length=400),
    platform: str | None = Query(None, max_length=64),
):
    """The customer an identity belongs to today, the value written any way ingest accepts it
    (projectors/lookup.py): ``matched`` is the stored identity found, ``looked_up`` what was
    searched; 404 names the normalised value."""
    try:
        look = lookup.normalise(kind, value, platform, request.app.state.settings.connectors.default_phone_region)
    except lookup.BadIdentity as exc:
        return error_response(
            400,
            "invalid_parameters",
            "the request parameters are not valid",
            [{"field": exc.field, "problem": exc.problem}],
        )
    sql, params = lookup.lookup_sql(schema(request, "support"), look)
    found, out = await card_of(request, sql, f"array(select customer_id from ({sql}) l limit 1)", params, None)
    if out is None:
        raise NotFound(f"customer with {look.describe()}")
    best = found[0]
    out["matched"] = {k: best[k] for k in ("kind", "platform", "value")}
    out["looked_up"] = {"kind": look.kind, "value": look.value, "platform": look.platform}
    out["also_matching"] = list(
        dict.fromkeys(f["customer_id"] for f in found if f["customer_id"] != best["customer_id"])
    )
    return out


@router.get("/customers/{customer_id}", tags=["customers"])
async def get_customer(
    customer_id: str,
    request: Request,
    include_merged: bool = Query(False, description="also list merged-away conversations"),
):
    """The context card: identities, facts, language, last order, conversations, sentiment. The
    merged id is resolved in the same pipeline as the card's queries (one checkout, one round trip)."""
    s = schema(request, "support")
    _, out = await card_of(
        request, queries.resolve(s), queries.resolved(s), {"customer_id": customer_id}, customer_id, include_merged
    )
    if out is None:
        raise NotFound(f"customer {customer_id}")
    return out
