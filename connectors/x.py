"""X (Twitter) Account Activity API (``/webhooks/x``), signed with
``X-Twitter-Webhooks-Signature`` (HMAC-SHA256 of the body with the consumer secret, base64).

``GET /webhooks/x?crc_token=...`` is the challenge-response check: the answer is
``{"response_token": "sha256=<base64 HMAC-SHA256(consumer secret, crc_token)>"}``.

* ``direct_message_events[]`` of type ``message_create`` -> ``twitter`` contacts (the
  subscribed account's own messages are outbound, by an agent);
* ``tweet_create_events[]`` (mentions and replies) -> ``twitter`` contacts with
  ``in_reply_to_status_id_str`` as the reply-to hint;
* every other event list (favorites, follows, typing, reads ...) goes to the DLQ.

Identities: the screen name (``social``, platform twitter) and the numeric user id
(``account``, platform twitter).
"""

from __future__ import annotations

from connectors.base import Connector, MapContext, Mapped, Rejected, WebhookRequest, build_contact, dumps, json_body
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import account_identity, dedupe_identities, parse_time, social_identity
from connectors.signatures import same, x_crc_response, x_signature

NAME = "x"


def verify(req: WebhookRequest, secret: str) -> bool:
    return same(req.headers.get("x-twitter-webhooks-signature"), x_signature(req.body, secret))


def crc(query: dict[str, str], secret: str) -> dict | None:
    token = query.get("crc_token")
    return {"response_token": x_crc_response(token, secret)} if token else None


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    body = json_body(req)
    if not isinstance(body, dict):
        raise MalformedPayload("<body>", "expected a JSON object")
    owner = body.get("for_user_id")
    if not isinstance(owner, str) or not owner:
        raise MalformedPayload("for_user_id", "missing")
    users = body.get("users") or {}
    out: Mapped = []
    known = False
    for i, ev in enumerate(body.get("direct_message_events") or []):
        known = True
        out.append(_guard(lambda ev=ev: direct_message(ev, owner, users, ctx), ev, f"direct_message_events.{i}"))
    for i, tw in enumerate(body.get("tweet_create_events") or []):
        known = True
        out.append(_guard(lambda tw=tw: tweet(tw, owner, ctx), tw, f"tweet_create_events.{i}"))
    others = [k for k in body if k.endswith("_events") and k not in ("direct_message_events", "tweet_create_events")]
    for key in others:
        out.append(Rejected(f"unsupported x event: {key}", dumps({key: body[key], "for_user_id": owner}), key))
    if not known and not others:
        out.append(Rejected("no *_events in the payload", req.body))
    return out


def _guard(fn, raw_obj, where):
    try:
        return fn()
    except Unmappable as exc:
        return Rejected(exc.reason, dumps(raw_obj), where)


def direct_message(ev: dict, owner: str, users: dict, ctx: MapContext):
    if ev.get("type") != "message_create":
        raise Unmappable(f"unsupported direct message event type {ev.get('type')!r}")
    mc = ev.get("message_create") or {}
    sender = mc.get("sender_id")
    outbound = sender == owner
    customer = (mc.get("target") or {}).get("recipient_id") if outbound else sender
    user = users.get(customer) or {}
    idents = dedupe_identities(
        [
            social_identity(user.get("screen_name"), "twitter", primary=True),
            account_identity(customer, "twitter", strength="verified"),
        ]
    )
    if not idents or not ev.get("id") or not ev.get("created_timestamp"):
        raise Unmappable("direct message without customer, id or created_timestamp")
    data = mc.get("message_data") or {}
    attachments = []
    media = (data.get("attachment") or {}).get("media")
    if isinstance(media, dict):
        attachments.append({"url": media.get("media_url_https"), "content_type": media.get("type")})
    return build_contact(
        {
            "provider_id": f"dm:{ev['id']}",
            "connector": NAME,
            "channel": "twitter",
            "direction": "outbound" if outbound else "inbound",
            "occurred_at": parse_time(ev["created_timestamp"], "created_timestamp"),
            "actor": {
                "role": "agent" if outbound else "customer",
                "id": sender if outbound else None,
                "display_name": user.get("name") if not outbound else None,
            },
            "identities": idents,
            "text": data.get("text") or None,
            "attachments": attachments,
            "thread": {"message_id": ev["id"]},
            "metadata": {"x_kind": "direct_message"},
        },
        ctx,
    )


def tweet(tw: dict, owner: str, ctx: MapContext):
    user = tw.get("user") or {}
    if not tw.get("id_str") or not tw.get("created_at") or not user.get("id_str"):
        raise Unmappable("tweet without id_str, created_at or user")
    outbound = user.get("id_str") == owner
    text = (tw.get("extended_tweet") or {}).get("full_text") or tw.get("full_text") or tw.get("text")
    if outbound:
        # the account's own reply: the customer is the one replied to
        idents = dedupe_identities(
            [
                social_identity(tw.get("in_reply_to_screen_name"), "twitter", primary=True),
                account_identity(tw.get("in_reply_to_user_id_str"), "twitter"),
            ]
        )
    else:
        idents = dedupe_identities(
            [
                social_identity(user.get("screen_name"), "twitter", primary=True),
                account_identity(user.get("id_str"), "twitter", strength="verified"),
            ]
        )
    return build_contact(
        {
            "provider_id": f"tweet:{tw['id_str']}",
            "connector": NAME,
            "channel": "twitter",
            "direction": "outbound" if outbound else "inbound",
            "occurred_at": parse_time(tw["created_at"], "created_at"),
            "actor": {
                "role": "agent" if outbound else "customer",
                "display_name": None if outbound else user.get("name"),
            },
            "identities": idents,
            "text": text or None,
            "language": tw.get("lang"),  # X's own detection ("und": none)
            "thread": {"message_id": tw["id_str"], "reply_to_id": tw.get("in_reply_to_status_id_str")},
            "metadata": {"x_kind": "reply" if tw.get("in_reply_to_status_id_str") else "mention"},
        },
        ctx,
    )


CONNECTOR = Connector(
    NAME,
    ("application/json",),
    "x_consumer_secret",
    verify,
    parse,
    doc="X Account Activity API: direct messages, mentions and replies",
)
