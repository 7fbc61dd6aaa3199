"""Outbound agent replies from any channel (``POST /webhooks/agent``), so response clocks stop.

    {"message_id": "a-1", "channel": "twitter", "sent_at": "2026-11-22T10:05:00Z",
     "agent_id": "agent-7", "agent_name": "Marco", "department": "support",
     "to": {"kind": "social", "value": "@giulia_r", "platform": "twitter"},
     "text": "...", "in_reply_to": "<provider message id or Message-ID>", "session_id": null}

``to`` is the customer's identity on that channel, normalized like every other identity.
Signed with ``X-Threadline-Signature``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors import generic
from connectors.base import Connector, MapContext, build_contact
from connectors.contact import Channel, IdentityKind
from connectors.errors import Unmappable
from connectors.normalize import account_identity, email_identity, parse_time, phone_identity, social_identity

NAME = "agent"


class To(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    platform: str | None = None


class AgentReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message_id: str = Field(min_length=1, max_length=256)
    channel: Channel
    sent_at: datetime
    agent_id: str = Field(min_length=1, max_length=128)
    agent_name: str | None = None
    department: Literal["support", "sales", "marketing", "other"] = "support"
    to: To
    text: str = Field(min_length=1, max_length=50000)
    subject: str | None = None
    in_reply_to: str | None = None
    session_id: str | None = None


def customer_identity(to: To, region: str):
    from connectors.contact import IdentityIn

    if to.kind == "email":
        return email_identity(to.value, primary=True)
    if to.kind == "phone":
        return phone_identity(to.value, region, primary=True)
    if to.kind == "social":
        return social_identity(to.value, to.platform or "other", primary=True)
    if to.kind == "account":
        return account_identity(to.value, to.platform or "other", primary=True)
    return IdentityIn(kind=to.kind, value=to.value, platform=to.platform, primary=True)


def to_contact(r: AgentReply, ctx: MapContext):
    ident = customer_identity(r.to, ctx.region)
    if ident is None:
        raise Unmappable(f"to.value is not a valid {r.to.kind}")
    return build_contact(
        {
            "provider_id": r.message_id,
            "connector": NAME,
            "channel": r.channel,
            "direction": "outbound",
            "occurred_at": parse_time(r.sent_at, "sent_at"),
            "actor": {"role": "agent", "department": r.department, "id": r.agent_id, "display_name": r.agent_name},
            "identities": [ident],
            "subject": r.subject,
            "text": r.text,
            "thread": {
                "message_id": r.message_id,
                "in_reply_to": r.in_reply_to,
                "reply_to_id": r.in_reply_to,
                "session_id": r.session_id,
            },
        },
        ctx,
    )


parse = generic.parser(AgentReply, to_contact)

CONNECTOR = Connector(
    NAME,
    ("application/json",),
    "webhook_secret",
    generic.verify,
    parse,
    doc="agent console replies on any channel (generic JSON)",
)
