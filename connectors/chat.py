"""Live chat (``POST /webhooks/chat``): the generic JSON a chat widget calls for every message.

    {"message_id": "m-1", "session_id": "s-9", "visitor_id": "v-42", "sent_at": "2026-11-22T10:00:00Z",
     "sender": "visitor" | "agent" | "bot", "text": "...", "agent_id": null, "department": "support",
     "login": {"email": "...", "phone": "...", "account_id": "..."},   # optional, when logged in
     "page_url": "https://...", "language": null}

The visitor id is the primary identity (kind ``chat_visitor``); a logged-in visitor's email,
phone and account id are added as verified identities. Signed with ``X-Threadline-Signature``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors import generic
from connectors.contact import IdentityIn
from connectors.base import Connector, MapContext, build_contact
from connectors.normalize import account_identity, dedupe_identities, email_identity, parse_time, phone_identity

NAME = "chat"


class Login(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str | None = None
    phone: str | None = None
    account_id: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message_id: str = Field(min_length=1, max_length=256)
    session_id: str = Field(min_length=1, max_length=256)
    visitor_id: str = Field(min_length=1, max_length=256)
    sent_at: datetime
    sender: Literal["visitor", "agent", "bot"] = "visitor"
    text: str = Field(min_length=1, max_length=20000)
    agent_id: str | None = None
    department: Literal["support", "sales", "marketing", "other"] | None = None
    login: Login | None = None
    page_url: str | None = None
    language: str | None = None


def to_contact(m: ChatMessage, ctx: MapContext):
    login = m.login or Login()
    idents = dedupe_identities(
        [
            IdentityIn(kind="chat_visitor", value=m.visitor_id, primary=True),
            email_identity(login.email, strength="verified"),
            phone_identity(login.phone, ctx.region, strength="verified"),
            account_identity(login.account_id, "web", strength="verified"),
        ]
    )
    visitor = m.sender == "visitor"
    return build_contact(
        {
            "provider_id": m.message_id,
            "connector": NAME,
            "channel": "chat",
            "direction": "inbound" if visitor else "outbound",
            "occurred_at": parse_time(m.sent_at, "sent_at"),
            "actor": {
                "role": "customer" if visitor else m.sender,
                "department": m.department,
                "id": None if visitor else m.agent_id,
            },
            "identities": idents,
            "text": m.text,
            "language": m.language,
            "thread": {"session_id": m.session_id, "message_id": m.message_id},
            "metadata": {"page_url": m.page_url} if m.page_url else {},
        },
        ctx,
    )


parse = generic.parser(ChatMessage, to_contact)

CONNECTOR = Connector(
    NAME, ("application/json",), "webhook_secret", generic.verify, parse, doc="live chat widget messages (generic JSON)"
)
