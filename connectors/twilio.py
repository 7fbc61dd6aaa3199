"""Twilio Programmable Messaging: SMS and WhatsApp (``POST /webhooks/twilio``).

Form-encoded webhooks signed with ``X-Twilio-Signature`` (see ``signatures.twilio_signature``),
or a JSON object of the same parameters with ``bodySHA256`` in the URL's query.
Two kinds of request arrive at the same URL:

* an incoming message (``MessageSid``, ``From``, ``To``, ``Body``, ``NumMedia`` +
  ``MediaUrl<N>``/``MediaContentType<N>``; WhatsApp adds ``whatsapp:`` prefixes, ``ProfileName``
  and ``WaId``) -> ``contact.received``, inbound, from the customer;
* an outbound message status callback (``MessageStatus`` queued/sent/delivered/read/failed/
  undelivered ...) -> ``contact.status_changed``, outbound, one event per status.

Twilio's messaging webhooks carry no event time: occurred_at is the arrival time at the gateway
and ``metadata.occurred_at_source`` says so.
"""

from __future__ import annotations

from connectors.base import Connector, MapContext, Mapped, Rejected, WebhookRequest, build_contact, form_body, json_body
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import dedupe_identities, phone_identity
from connectors.signatures import twilio_json_valid, twilio_valid

NAME = "twilio"
STATUS_VALUES = {
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "canceled",
    "partially_delivered",
}


def verify(req: WebhookRequest, token: str) -> bool:
    """Twilio's signature over the URL it called and the form parameters; for a JSON body, over
    the URL alone, whose ``bodySHA256`` must be the body's hash (``signatures``)."""
    signature = req.headers.get("x-twilio-signature")
    if req.content_type == "application/json":
        return twilio_json_valid(req.url, req.body, signature, token)
    return twilio_valid(req.url, form_body(req) if req.body else [], signature, token)


def params_of(req: WebhookRequest) -> list[tuple[str, str]]:
    """The request's parameters: the form's pairs, or a JSON body's object (Twilio's JSON
    webhooks carry the same names) with scalar values as Twilio writes them in a form."""
    if req.content_type != "application/json":
        return form_body(req)
    obj = json_body(req)
    if not isinstance(obj, dict):
        raise MalformedPayload("<body>", "expected a JSON object of Twilio's parameters")
    pairs = []
    for name, value in obj.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = ""
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise MalformedPayload(name, "expected a string, number or boolean")
        pairs.append((name, value))
    return pairs


def _channel(params: dict[str, str]) -> str:
    return (
        "whatsapp"
        if params.get("From", "").startswith("whatsapp:") or params.get("To", "").startswith("whatsapp:")
        else "sms"
    )


def _received_at(ctx: MapContext):
    if ctx.received_at is None:
        raise Unmappable("twilio messaging webhooks carry no time and no arrival time was given")
    return ctx.received_at


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    params = dict(params_of(req))
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise MalformedPayload("MessageSid", "missing")
    status = params.get("MessageStatus")
    try:
        if status and status != "received":
            return [status_callback(params, sid, status, ctx)]
        if "Body" not in params:
            raise Unmappable("neither a message (Body) nor a status callback (MessageStatus)")
        return [incoming(params, sid, ctx)]
    except Unmappable as exc:
        return [Rejected(exc.reason, req.body)]


def incoming(params: dict[str, str], sid: str, ctx: MapContext):
    channel = _channel(params)
    ident = phone_identity(params.get("From"), ctx.region, primary=True, strength="verified")
    if ident is None:
        raise Unmappable("From is not a valid phone number")
    attachments = []
    for i in range(int(params.get("NumMedia", "0") or 0)):
        url = params.get(f"MediaUrl{i}")
        if url:
            attachments.append({"url": url, "content_type": params.get(f"MediaContentType{i}")})
    metadata = {"occurred_at_source": "received", "to": params.get("To", "")}
    if params.get("MessagingServiceSid"):
        metadata["messaging_service_sid"] = params["MessagingServiceSid"]
    return build_contact(
        {
            "provider_id": sid,
            "connector": NAME,
            "channel": channel,
            "direction": "inbound",
            "occurred_at": _received_at(ctx),
            "actor": {"role": "customer", "display_name": params.get("ProfileName") or None},
            "identities": dedupe_identities([ident]),
            "text": params.get("Body") or None,
            "attachments": attachments,
            "thread": {"message_id": sid, "reply_to_id": params.get("OriginalRepliedMessageSid")},
            "metadata": metadata,
        },
        ctx,
    )


def status_callback(params: dict[str, str], sid: str, status: str, ctx: MapContext):
    if status not in STATUS_VALUES:
        raise Unmappable(f"unknown MessageStatus {status!r}")
    ident = phone_identity(params.get("To"), ctx.region, primary=True)
    if ident is None:
        raise Unmappable("To is not a valid phone number")
    metadata = {"status": status, "occurred_at_source": "received"}
    if params.get("ErrorCode"):
        metadata["error_code"] = params["ErrorCode"]
    return build_contact(
        {
            "provider_id": f"{sid}:status:{status}",
            "connector": NAME,
            "channel": _channel(params),
            "direction": "outbound",
            "event_type": "contact.status_changed",
            "occurred_at": _received_at(ctx),
            "actor": {"role": "system"},
            "identities": [ident],
            "thread": {"message_id": sid},
            "metadata": metadata,
        },
        ctx,
    )


MEDIA_TYPES = ("application/x-www-form-urlencoded", "application/json")
CONNECTOR = Connector(
    NAME,
    MEDIA_TYPES,
    "twilio_auth_token",
    verify,
    parse,
    doc="Twilio SMS and WhatsApp: incoming messages and outbound status callbacks",
)
