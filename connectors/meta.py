"""Meta webhooks (``/webhooks/meta``): Facebook Messenger, Instagram messaging and the WhatsApp
Cloud API, all signed with ``X-Hub-Signature-256`` over the raw body with the app secret.

``GET /webhooks/meta?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...`` is the
verification handshake: the challenge is echoed when the verify token matches (``handshake``).

* ``object: page`` / ``object: instagram``: ``entry[].messaging[]`` events. A ``message``
  becomes a ``facebook`` / ``instagram`` contact (``message.is_echo`` = the page's own reply:
  outbound, agent); other event kinds (reads, deliveries, reactions ...) are not contacts and go
  to the DLQ with their kind as the reason.
* ``object: whatsapp_business_account``: ``entry[].changes[].value`` with ``messages[]``
  (text, image, document, audio, video, button, interactive; ``context.id`` = reply-to) and
  ``statuses[]`` (sent/delivered/read/failed of the business's messages).

The customer's identity is the page- or Instagram-scoped id (kind ``account``) or, on WhatsApp,
the phone number (``wa_id``) in E.164. Timestamps are the events' own (milliseconds on
Messenger/Instagram, seconds on WhatsApp).
"""

from __future__ import annotations

from connectors.base import (
    Connector,
    MapContext,
    Mapped,
    Rejected,
    WebhookRequest,
    build_contact,
    dumps,
    json_body,
    require,
)
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import account_identity, parse_time, phone_identity
from connectors.signatures import meta_signed, same

NAME = "meta"
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")


def verify(req: WebhookRequest, secret: str) -> bool:
    return meta_signed(req.body, req.headers.get("x-hub-signature-256"), secret)


def handshake(query: dict[str, str], verify_token: str | None) -> str | None:
    """The challenge to echo, or None when the request is not a valid subscription check."""
    if query.get("hub.mode") != "subscribe" or not verify_token:
        return None
    if not same(query.get("hub.verify_token"), verify_token):
        return None
    return query.get("hub.challenge") or None


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    body = json_body(req)
    if not isinstance(body, dict):
        raise MalformedPayload("<body>", "expected a JSON object")
    obj = require(body, "object")
    entries = require(body, "entry", list)
    out: Mapped = []
    for e_i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise MalformedPayload(f"entry.{e_i}", "expected an object")
        if obj in ("page", "instagram"):
            channel = "facebook" if obj == "page" else "instagram"
            events = entry.get("messaging", entry.get("standby"))
            if not isinstance(events, list):
                raise MalformedPayload(f"entry.{e_i}.messaging", "missing")
            for m_i, ev in enumerate(events):
                out.append(_guard(lambda ev=ev: messaging(ev, channel, ctx), ev, f"entry.{e_i}.messaging.{m_i}"))
        elif obj == "whatsapp_business_account":
            changes = require(entry, "changes", list)
            for c_i, change in enumerate(changes):
                out.extend(whatsapp_change(change, ctx, f"entry.{e_i}.changes.{c_i}"))
        else:
            out.append(Rejected(f"unknown object {obj!r}", dumps(entry), f"entry.{e_i}"))
    return out


def _guard(fn, raw_obj, where: str):
    try:
        return fn()
    except Unmappable as exc:
        return Rejected(exc.reason, dumps(raw_obj), where)


def messaging(ev: dict, channel: str, ctx: MapContext):
    msg = ev.get("message")
    if not isinstance(msg, dict):
        kinds = sorted(k for k in ev if k not in ("sender", "recipient", "timestamp"))
        raise Unmappable(f"unsupported {channel} event: {','.join(kinds) or 'empty'}")
    echo = bool(msg.get("is_echo"))
    customer = (ev.get("recipient") if echo else ev.get("sender")) or {}
    ident = account_identity(customer.get("id"), channel, primary=True, strength="verified")
    if ident is None or not msg.get("mid") or "timestamp" not in ev:
        raise Unmappable("message without sender, mid or timestamp")
    attachments = [
        {"url": (a.get("payload") or {}).get("url"), "content_type": a.get("type")}
        for a in msg.get("attachments", [])
        if isinstance(a, dict)
    ]
    meta = {}
    if isinstance(msg.get("quick_reply"), dict):
        meta["quick_reply"] = str(msg["quick_reply"].get("payload", ""))
    return build_contact(
        {
            "provider_id": msg["mid"],
            "connector": NAME,
            "channel": channel,
            "direction": "outbound" if echo else "inbound",
            "occurred_at": parse_time(ev["timestamp"], "timestamp"),
            "actor": {
                "role": "agent" if echo else "customer",
                "id": str(msg.get("app_id")) if echo and msg.get("app_id") else None,
            },
            "identities": [ident],
            "text": msg.get("text") or None,
            "attachments": attachments,
            "thread": {"message_id": msg["mid"], "reply_to_id": (msg.get("reply_to") or {}).get("mid")},
            "metadata": meta,
        },
        ctx,
    )


def whatsapp_change(change: dict, ctx: MapContext, where: str) -> Mapped:
    if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
        raise MalformedPayload(f"{where}.value", "missing")
    value = change["value"]
    if change.get("field") != "messages":
        return [Rejected(f"unsupported whatsapp field {change.get('field')!r}", dumps(change), where)]
    names = {
        c.get("wa_id"): (c.get("profile") or {}).get("name") for c in value.get("contacts", []) if isinstance(c, dict)
    }
    out: Mapped = []
    for i, m in enumerate(value.get("messages", [])):
        out.append(_guard(lambda m=m: whatsapp_message(m, names, ctx), m, f"{where}.value.messages.{i}"))
    for i, st in enumerate(value.get("statuses", [])):
        out.append(_guard(lambda st=st: whatsapp_status(st, ctx), st, f"{where}.value.statuses.{i}"))
    if not out:
        out.append(Rejected("whatsapp change with neither messages nor statuses", dumps(change), where))
    return out


def whatsapp_message(m: dict, names: dict, ctx: MapContext):
    kind = m.get("type")
    ident = phone_identity(m.get("from"), ctx.region, primary=True, strength="verified")
    if ident is None or not m.get("id") or not m.get("timestamp"):
        raise Unmappable("whatsapp message without a valid from, id or timestamp")
    text, attachments = None, []
    if kind == "text":
        text = (m.get("text") or {}).get("body")
    elif kind in MEDIA_TYPES:
        media = m.get(kind) or {}
        text = media.get("caption")
        attachments = [
            {
                "name": media.get("filename"),
                "content_type": media.get("mime_type"),
                "sha256": media.get("sha256"),
                "url": f"whatsapp-media:{media.get('id')}",
            }
        ]
    elif kind == "button":
        text = (m.get("button") or {}).get("text")
    elif kind == "interactive":
        inter = m.get("interactive") or {}
        reply = inter.get("button_reply") or inter.get("list_reply") or {}
        text = reply.get("title")
    else:
        raise Unmappable(f"unsupported whatsapp message type {kind!r}")
    return build_contact(
        {
            "provider_id": m["id"],
            "connector": NAME,
            "channel": "whatsapp",
            "direction": "inbound",
            "occurred_at": parse_time(m["timestamp"], "timestamp"),
            "actor": {"role": "customer", "display_name": names.get(m.get("from"))},
            "identities": [ident],
            "text": text or None,
            "attachments": attachments,
            "thread": {"message_id": m["id"], "reply_to_id": (m.get("context") or {}).get("id")},
            "metadata": {"whatsapp_type": kind},
        },
        ctx,
    )


def whatsapp_status(st: dict, ctx: MapContext):
    ident = phone_identity(st.get("recipient_id"), ctx.region, primary=True)
    if ident is None or not st.get("id") or not st.get("status") or not st.get("timestamp"):
        raise Unmappable("whatsapp status without recipient_id, id, status or timestamp")
    return build_contact(
        {
            "provider_id": f"{st['id']}:status:{st['status']}",
            "connector": NAME,
            "channel": "whatsapp",
            "direction": "outbound",
            "event_type": "contact.status_changed",
            "occurred_at": parse_time(st["timestamp"], "timestamp"),
            "actor": {"role": "system"},
            "identities": [ident],
            "thread": {"message_id": st["id"]},
            "metadata": {"status": st["status"]},
        },
        ctx,
    )


CONNECTOR = Connector(
    NAME,
    ("application/json",),
    "meta_app_secret",
    verify,
    parse,
    doc="Meta: Messenger, Instagram messaging, WhatsApp Cloud API",
)
