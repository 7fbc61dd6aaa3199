"""Support's routes: a customer's timeline and conversations, a conversation, the inbox."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from projectors.api import queries
from projectors.api.paging import Cursor, Limit, Offset
from projectors.api.reads import NotFound, one, paged, resolve, rows, schema

SlaState = Literal["running", "breached", "met", "none"]
ConversationState = Literal["open", "resolved", "merged_into"]
WaitingOn = Literal["agent", "customer", "nobody"]

SCOPES = {
    "/customers/{customer_id}/timeline": "support",
    "/customers/{customer_id}/conversations": "support",
    "/conversations/{conversation_id}": "support",
    "/support/inbox": "support",
}

router = APIRouter()


@router.get("/customers/{customer_id}/timeline", tags=["support"])
async def timeline(
    customer_id: str,
    request: Request,
    channel: str | None = None,
    limit: int = Limit,
    offset: int = Offset,
    cursor: str | None = Cursor,
):
    """Every contact across channels in event-time order; ``channel_switch`` marks a change."""
    s = schema(request, "support")
    cid = await resolve(request, s, customer_id)
    return await paged(
        request,
        queries.timeline(s),
        queries.TIMELINE,
        {"customer_id": cid, "channel": channel},
        limit=limit,
        offset=offset,
        cursor=cursor,
        customer_id=cid,
    )


@router.get("/customers/{customer_id}/conversations", tags=["support"])
async def customer_conversations(
    customer_id: str,
    request: Request,
    state: ConversationState | None = None,
    limit: int = Limit,
    offset: int = Offset,
    cursor: str | None = Cursor,
):
    s = schema(request, "support")
    cid = await resolve(request, s, customer_id)
    return await paged(
        request,
        queries.customer_conversations(s),
        queries.CONVERSATIONS,
        {"customer_id": cid, "state": state},
        limit=limit,
        offset=offset,
        cursor=cursor,
        customer_id=cid,
    )


@router.get("/conversations/{conversation_id}", tags=["support"])
async def get_conversation(conversation_id: str, request: Request):
    s = schema(request, "support")
    params = {"conversation_id": conversation_id}
    conv = await one(request, queries.conversation(s), params)
    if conv is None:
        raise NotFound(f"conversation {conversation_id}")
    conv["events"] = await rows(request, queries.conversation_events(s), params)
    conv["contacts"] = await rows(request, queries.conversation_contacts(s), params)
    return conv


@router.get("/support/inbox", tags=["support"])
async def inbox(
    request: Request,
    sla_state: SlaState | None = None,
    channel: str | None = None,
    waiting_on: WaitingOn | None = None,
    limit: int = Limit,
    offset: int = Offset,
    cursor: str | None = Cursor,
):
    """Open conversations, the most urgent SLA first."""
    return await paged(
        request,
        queries.inbox(schema(request, "support")),
        queries.INBOX,
        {"sla_state": sla_state, "channel": channel, "waiting_on": waiting_on},
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
