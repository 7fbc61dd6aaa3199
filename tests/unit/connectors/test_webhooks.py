"""The gateway's decision for each webhook (connectors.webhooks.handle): pure, no Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connectors.base import MapContext, WebhookRequest
from connectors.contact import event_id
from connectors.signatures import twilio_signature, x_crc_response
from connectors.webhooks import handle
from connectors import meta, x
from fixtures.providers import SECRETS, body, headers

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CTX = MapContext(received_at=NOW)


def request(connector: str, content: bytes, hdrs: dict | None = None) -> WebhookRequest:
    url = f"http://testserver/webhooks/{connector}"
    h = headers(connector, content, url) if hdrs is None else hdrs
    return WebhookRequest(connector, url, h, content, NOW)


def run(req: WebhookRequest, secrets=SECRETS, limit=1_000_000):
    return handle(req, secrets, CTX, limit)


CASES = [
    ("twilio", "twilio_sms.json"),
    ("twilio", "twilio_whatsapp.json"),
    ("twilio", "twilio_status.json"),
    ("twilio-voice", "twilio_voice_status.json"),
    ("twilio-voice", "twilio_transcription.json"),
    ("twilio-voice", "twilio_gather.json"),
    ("meta", "meta_messenger.json"),
    ("meta", "meta_instagram.json"),
    ("meta", "meta_whatsapp.json"),
    ("meta", "meta_whatsapp_status.json"),
    ("x", "x_dm.json"),
    ("x", "x_tweet.json"),
    ("shopify", "shopify_order.json"),
    ("chat", "chat.json"),
    ("review", "review.json"),
    ("web-form", "web_form.json"),
    ("agent", "agent.json"),
    ("email", "email_reply.eml"),
]


@pytest.mark.parametrize("connector,fixture", CASES)
def test_every_documented_payload_maps_to_one_contact(connector, fixture):
    out = run(request(connector, body(connector, fixture)))
    assert (out.status, out.rejected, len(out.contacts)) == (202, [], 1)
    assert out.contacts[0].connector == connector


@pytest.mark.parametrize("connector,fixture", CASES)
def test_a_retried_webhook_maps_to_the_same_event_id(connector, fixture):
    content = body(connector, fixture)
    first, second = run(request(connector, content)), run(request(connector, content))
    ids = {event_id(c.connector, c.provider_id) for c in first.contacts + second.contacts}
    assert len(ids) == 1


def test_an_unknown_connector_is_404():
    out = run(request("telegram", b"{}", {"content-type": "application/json"}))
    assert (out.status, out.error) == (404, "unknown_connector")


def test_a_body_over_the_limit_is_413():
    content = body("chat", "chat.json")
    out = run(request("chat", content), limit=len(content) - 1)
    assert (out.status, out.error) == (413, "body_too_large")


@pytest.mark.parametrize(
    "connector,ctype",
    [
        ("twilio", "text/plain"),
        ("meta", "text/plain"),
        ("email", "application/json"),
        ("chat", "application/x-www-form-urlencoded"),
    ],
)
def test_an_unsupported_media_type_is_415(connector, ctype):
    out = run(request(connector, b"x=1", {"content-type": ctype}))
    assert (out.status, out.error) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "connector,fixture,header",
    [
        ("twilio", "twilio_sms.json", "x-twilio-signature"),
        ("twilio-voice", "twilio_voice_status.json", "x-twilio-signature"),
        ("meta", "meta_messenger.json", "x-hub-signature-256"),
        ("x", "x_dm.json", "x-twitter-webhooks-signature"),
        ("shopify", "shopify_order.json", "x-shopify-hmac-sha256"),
        ("chat", "chat.json", "x-threadline-signature"),
        ("email", "email_reply.eml", "x-threadline-signature"),
    ],
)
def test_a_missing_or_wrong_signature_is_401(connector, fixture, header):
    content = body(connector, fixture)
    good = request(connector, content)
    missing = {k: v for k, v in good.headers.items() if k != header}
    wrong = {**good.headers, header: good.headers[header][:-4] + "AAA="}
    for h in (missing, wrong):
        out = run(request(connector, content, h))
        assert (out.status, out.error, out.contacts) == (401, "bad_signature", [])


def test_a_body_changed_after_signing_is_401():
    content = body("meta", "meta_messenger.json")
    signed = request("meta", content)
    out = run(request("meta", content.replace(b"778899", b"778800"), dict(signed.headers)))
    assert out.status == 401


def test_the_twilio_signature_covers_the_url():
    content = body("twilio", "twilio_sms.json")
    h = headers("twilio", content, "https://elsewhere.example/webhooks/twilio")
    assert run(request("twilio", content, h)).status == 401


def test_a_connector_without_a_configured_secret_is_401():
    out = run(request("chat", body("chat", "chat.json")), secrets={**SECRETS, "webhook_secret": None})
    assert (out.status, out.error) == (401, "not_configured")


@pytest.mark.parametrize(
    "connector,content,field",
    [
        ("meta", b'{"object": "page"}', "entry"),
        ("meta", b"{not json", "<body>"),
        ("meta", b'{"object": "page", "entry": [{"id": "1"}]}', "entry.0.messaging"),
        ("x", b'{"direct_message_events": []}', "for_user_id"),
        (
            "chat",
            json.dumps(
                {"session_id": "s", "visitor_id": "v", "sent_at": "2026-11-22T10:00:00Z", "text": "hi"}
            ).encode(),
            "message_id",
        ),
        (
            "chat",
            json.dumps(
                {
                    "message_id": "m",
                    "session_id": "s",
                    "visitor_id": "v",
                    "sent_at": "2026-11-22T10:00:00",
                    "text": "hi",
                }
            ).encode(),
            "sent_at",
        ),
        (
            "review",
            json.dumps(
                {
                    "review_id": "r",
                    "platform": "p",
                    "rating": 11,
                    "author_handle": "a",
                    "created_at": "2026-11-22T10:00:00Z",
                }
            ).encode(),
            "rating",
        ),
        (
            "web-form",
            json.dumps(
                {"submission_id": "s", "form_id": "f", "submitted_at": "2026-11-22T10:00:00Z", "fields": {}}
            ).encode(),
            "fields",
        ),
        (
            "agent",
            json.dumps(
                {
                    "message_id": "m",
                    "channel": "pigeon",
                    "sent_at": "2026-11-22T10:00:00Z",
                    "agent_id": "a",
                    "to": {"kind": "email", "value": "a@b.it"},
                    "text": "t",
                }
            ).encode(),
            "channel",
        ),
        ("twilio", b"Body=hello&From=%2B393471234567", "MessageSid"),
        ("twilio-voice", b"CallStatus=completed", "CallSid"),
        ("shopify", b'{"email": "a@b.it"}', "id"),
        ("email", b"   ", "<body>"),
    ],
)
def test_a_malformed_body_is_400_naming_the_field(connector, content, field):
    out = run(request(connector, content))
    assert (out.status, out.error, out.contacts) == (400, "invalid_body", [])
    assert field in [f["field"] for f in out.fields]


@pytest.mark.parametrize(
    "connector,fixture,reason",
    [
        ("meta", "meta_messenger_read.json", "unsupported facebook event: read"),
        ("x", "x_favorite.json", "unsupported x event: favorite_events"),
    ],
)
def test_a_signed_well_formed_but_unknown_event_is_accepted_for_the_dlq(connector, fixture, reason):
    out = run(request(connector, body(connector, fixture)))
    assert (out.status, out.contacts) == (202, [])
    assert [r.reason for r in out.rejected] == [reason]


def test_another_shopify_topic_goes_to_the_dlq():
    content = body("shopify", "shopify_order.json")
    h = {**headers("shopify", content, "u"), "x-shopify-topic": "orders/cancelled"}
    out = run(request("shopify", content, h))
    assert out.status == 202 and out.contacts == [] and "orders/cancelled" in out.rejected[0].reason


def test_a_batch_maps_what_it_can_and_dead_letters_the_rest():
    batch = json.loads(body("meta", "meta_messenger.json"))
    read = json.loads(body("meta", "meta_messenger_read.json"))
    batch["entry"][0]["messaging"] += read["entry"][0]["messaging"]
    out = run(request("meta", json.dumps(batch).encode()))
    assert len(out.contacts) == 1 and [r.where for r in out.rejected] == ["entry.0.messaging.1"]


def test_a_message_from_an_invalid_number_is_unmappable_not_malformed():
    content = body("twilio", "twilio_sms.json").replace(b"From=%2B393471234567", b"From=%2B1555")
    out = run(request("twilio", content))
    assert out.status == 202 and out.contacts == [] and out.rejected[0].reason == "From is not a valid phone number"


def test_meta_handshake_echoes_the_challenge_only_with_the_verify_token():
    q = {"hub.mode": "subscribe", "hub.verify_token": "meta-verify", "hub.challenge": "1158201444"}
    assert meta.handshake(q, "meta-verify") == "1158201444"
    assert meta.handshake({**q, "hub.verify_token": "wrong"}, "meta-verify") is None
    assert meta.handshake({**q, "hub.mode": "unsubscribe"}, "meta-verify") is None


def test_x_crc_answers_the_documented_hmac():
    # X's documentation example: consumer secret + crc_token -> sha256=base64(HMAC-SHA256)
    token, secret = "9b4507b3-9040-4669-9ca3-6b94edb50553", "z3ZX4v7mAAUGykl3EcmkqbartmuW8VFOOzCloLx9Q45P0hLrFu"
    assert x.crc({"crc_token": token}, secret) == {"response_token": x_crc_response(token, secret)}
    assert x_crc_response(token, secret).startswith("sha256=") and len(x_crc_response(token, secret)) == 51
    assert x.crc({}, secret) is None


def test_twilio_signature_matches_the_documented_example():
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert (
        twilio_signature("https://mycompany.com/myapp.php?foo=1&bar=2", params.items(), "12345")
        == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
