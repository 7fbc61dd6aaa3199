"""Provider-shaped payloads through the gateway to the real broker, read back decoded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.contact import event_id
from fixtures.providers import body, headers
from fixtures.tokens import CONTACT_TOKEN, bearer

URL = "http://testserver/webhooks/{}"


def post(gateway, connector: str, content: bytes, hdrs: dict | None = None):
    url = URL.format(connector)
    return gateway.post(url, content=content, headers=hdrs if hdrs is not None else headers(connector, content, url))


def ts(record) -> datetime:
    return record["occurred_at"].astimezone(UTC)


def idents(record) -> list[tuple]:
    return [(i["kind"], i["value"], i["platform"], i["strength"]) for i in record["identities"]]


def facts(record) -> set[tuple]:
    return {(f["kind"], f["value"]) for f in record["facts"]}


def thread(record) -> dict:
    return {k: v for k, v in record["thread"].items() if v not in (None, [])}


# (connector, fixture, channel, identities, occurred_at (None = arrival time), text starts, thread hints, facts)
CHANNELS = [
    (
        "twilio",
        "twilio_sms.json",
        "sms",
        [("phone", "+393471234567", None, "verified")],
        None,
        "Ciao, il mio ordine",
        {"message_id": "SM1f0e8ae6ade43cb3c0ce4525424e404f"},
        {("order_number", "100234")},
    ),
    (
        "twilio",
        "twilio_whatsapp.json",
        "whatsapp",
        [("phone", "+48601234567", None, "verified")],
        None,
        "Paczka przyszła",
        {"message_id": "SM2b6d3e9fa4c1d5e8f7a6b5c4d3e2f1a0"},
        {("order_number", "554433")},
    ),
    (
        "twilio",
        "twilio_status.json",
        "sms",
        [("phone", "+393471234567", None, "asserted")],
        None,
        None,
        {"message_id": "SM3c7e4f0ab5d2e6f9a8b7c6d5e4f3a2b1"},
        set(),
    ),
    (
        "twilio-voice",
        "twilio_voice_status.json",
        "voice",
        [("phone", "+393471234567", None, "verified")],
        datetime(2026, 11, 22, 12, 14, 5, tzinfo=UTC),
        None,
        {"call_id": "CA5f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c"},
        set(),
    ),
    (
        "twilio-voice",
        "twilio_transcription.json",
        "voice",
        [("phone", "+393471234567", None, "verified")],
        None,
        "Buongiorno, chiamo",
        {"call_id": "CA5f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c", "message_id": "RE1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"},
        {("order_number", "100234")},
    ),
    (
        "twilio-voice",
        "twilio_gather.json",
        "ivr",
        [("phone", "+393471234567", None, "verified")],
        None,
        None,
        {"call_id": "CA5f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c"},
        set(),
    ),
    (
        "meta",
        "meta_messenger.json",
        "facebook",
        [("account", "6823419087654321", "facebook", "verified")],
        datetime(2026, 11, 22, 12, 15, tzinfo=UTC),
        "Hoi, mijn pakket",
        {
            "message_id": "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
            "reply_to_id": "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU",
        },
        {("order_number", "778899")},
    ),
    (
        "meta",
        "meta_instagram.json",
        "instagram",
        [("account", "1134567890123456", "instagram", "verified")],
        datetime(2026, 11, 22, 12, 20, tzinfo=UTC),
        "Siparişim 445566",
        None,
        {("order_number", "445566")},
    ),
    (
        "meta",
        "meta_whatsapp.json",
        "whatsapp",
        [("phone", "+447700123456", None, "verified")],
        datetime(2026, 11, 22, 12, 30, tzinfo=UTC),
        "Order 123987",
        {"message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="},
        {("order_number", "123987")},
    ),
    (
        "x",
        "x_dm.json",
        "twitter",
        [("social", "giulia_r", "twitter", "asserted"), ("account", "3001969357", "twitter", "verified")],
        datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
        "Il numero dell'ordine",
        {"message_id": "954491830116155396"},
        {("order_number", "100234")},
    ),
    (
        "x",
        "x_tweet.json",
        "twitter",
        [("social", "giulia_r", "twitter", "asserted"), ("account", "3001969357", "twitter", "verified")],
        datetime(2026, 11, 22, 8, 30, tzinfo=UTC),
        "@ShopSupport il mio ordine",
        {"message_id": "1858000000000000001", "reply_to_id": "1857990000000000000"},
        set(),
    ),
    (
        "shopify",
        "shopify_order.json",
        "store",
        [
            ("email", "giulia.rossi@example.it", None, "asserted"),
            ("phone", "+393471234567", None, "asserted"),
            ("account", "115310627314723954", "shopify", "verified"),
        ],
        datetime(2026, 11, 20, 17, 5, 12, tzinfo=UTC),
        None,
        {},
        {("order_number", "100234"), ("order_name", "#100234")},
    ),
    (
        "email",
        "email_reply.eml",
        "email",
        [("email", "giulia.rossi@example.it", None, "asserted"), ("phone", "+393471234567", None, "hint")],
        datetime(2026, 11, 22, 9, 2, 3, tzinfo=UTC),
        "Buongiorno,\n\nvi mando la foto",
        {
            "message_id": "<CAF=giulia.2@mail.example.it>",
            "in_reply_to": "<reply.1@shop.example>",
            "references": ["<CAF=giulia.1@mail.example.it>", "<reply.1@shop.example>"],
        },
        {("order_number", "100234")},
    ),
    (
        "chat",
        "chat.json",
        "chat",
        [
            ("chat_visitor", "v-5f2c9a", None, "asserted"),
            ("email", "sanne.devries@example.nl", None, "verified"),
            ("phone", "+31612345678", None, "verified"),
        ],
        datetime(2026, 11, 22, 8, 40, tzinfo=UTC),
        "Ik heb het formulier",
        {"message_id": "chat-msg-0192", "session_id": "chat-sess-77"},
        {("account_number", "55512345")},
    ),
    (
        "review",
        "review.json",
        "review",
        [("social", "emre.k", "trustpilot", "asserted")],
        datetime(2026, 11, 21, 13, 20, tzinfo=UTC),
        "Hızlı kargo",
        {"message_id": "rv-99812"},
        {("order_number", "667788")},
    ),
    (
        "web-form",
        "web_form.json",
        "web_form",
        [
            ("email", "sanne.devries@example.nl", None, "asserted"),
            ("phone", "+31612345678", None, "asserted"),
            ("cookie", "v-5f2c9a", None, "asserted"),
        ],
        datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
        "Ik wil graag",
        {"session_id": "sub-3141"},
        {("policy", "ski"), ("destination", "Oostenrijk")},
    ),
    (
        "agent",
        "agent.json",
        "twitter",
        [("social", "giulia_r", "twitter", "asserted")],
        datetime(2026, 11, 22, 8, 41, tzinfo=UTC),
        "Ciao Giulia",
        {
            "message_id": "agent-reply-501",
            "in_reply_to": "tweet:1858000000000000001",
            "reply_to_id": "tweet:1858000000000000001",
        },
        set(),
    ),
]


@pytest.mark.parametrize(
    "connector,fixture,channel,want_idents,occurred,text,hints,want_facts",
    CHANNELS,
    ids=[f"{c[0]}:{c[1]}" for c in CHANNELS],
)
def test_a_provider_payload_becomes_the_right_event_on_the_broker(
    gateway, contacts, connector, fixture, channel, want_idents, occurred, text, hints, want_facts
):
    before = datetime.now(UTC).replace(microsecond=0)
    resp = post(gateway, connector, body(connector, fixture))
    assert resp.status_code == 202, resp.text
    (ack,) = resp.json()["accepted"]
    (record,) = contacts.decoded(1)
    assert record["event_id"] == ack["event_id"] and record["connector"] == connector
    assert record["channel"] == channel
    assert idents(record) == want_idents
    if occurred is None:  # the provider gives no event time: arrival time, and the record says so
        assert ts(record) >= before and record["metadata"]["occurred_at_source"] == "received"
    else:
        assert ts(record) == occurred
    if text is None:
        assert record["text"] is None
    else:
        assert record["text"].startswith(text), record["text"]
    if hints is not None:
        assert thread(record) == hints
    assert want_facts <= facts(record)


def test_the_same_webhook_delivered_twice_has_the_same_event_id(gateway, contacts):
    content = body("meta", "meta_whatsapp.json")
    first, second = post(gateway, "meta", content), post(gateway, "meta", content)
    assert first.json()["accepted"][0]["event_id"] == second.json()["accepted"][0]["event_id"]
    records = contacts.decoded(2)
    assert {r["event_id"] for r in records} == {first.json()["accepted"][0]["event_id"]}


BAD = [
    (
        "wrong signature",
        "meta",
        lambda c: {"content-type": "application/json", "x-hub-signature-256": "sha256=00"},
        401,
    ),
    ("missing signature", "twilio", lambda c: {"content-type": "application/x-www-form-urlencoded"}, 401),
    (
        "unsupported media type",
        "chat",
        lambda c: {**headers("chat", c, URL.format("chat")), "content-type": "text/plain"},
        415,
    ),
    ("unknown connector", "telegram", lambda c: {"content-type": "application/json"}, 404),
]


@pytest.mark.parametrize("case,connector,make_headers,status", BAD, ids=[b[0] for b in BAD])
def test_a_rejected_request_produces_nothing(gateway, contacts, dlq, case, connector, make_headers, status):
    content = body(
        connector if connector != "telegram" else "chat",
        {"meta": "meta_messenger.json", "twilio": "twilio_sms.json"}.get(connector, "chat.json"),
    )
    resp = post(gateway, connector, content, make_headers(content))
    assert resp.status_code == status and resp.json()["error"]
    assert contacts.count() == 0 and dlq.count() == 0


def test_a_malformed_body_is_400_naming_the_field_and_produces_nothing(gateway, contacts, dlq):
    content = b'{"object": "page", "entry": [{"id": "1"}]}'
    resp = post(gateway, "meta", content)
    assert resp.status_code == 400
    assert resp.json()["fields"][0]["field"] == "entry.0.messaging"
    assert contacts.count() == 0 and dlq.count() == 0


def test_a_body_over_the_limit_is_413_and_produces_nothing(gateway, contacts, connector_settings):
    content = b'{"pad": "' + b"x" * connector_settings.connectors.max_body_bytes + b'"}'
    resp = post(gateway, "chat", content)
    assert resp.status_code == 413 and resp.json()["error"] == "body_too_large"
    assert contacts.count() == 0


def test_an_unknown_event_type_is_202_and_its_raw_payload_goes_to_the_dlq(gateway, contacts, dlq):
    content = body("x", "x_favorite.json")
    resp = post(gateway, "x", content)
    assert resp.status_code == 202 and resp.json() == {"accepted": [], "dead_lettered": 1}
    (rec,) = dlq.read(1)
    hdrs = {k: v.decode() for k, v in rec.headers}
    assert hdrs["reason"] == "unsupported x event: favorite_events" and hdrs["connector"] == "x"
    assert rec.key == b"x" and b"favorite_events" in rec.value
    assert contacts.count() == 0


def test_the_meta_handshake_and_the_x_crc_check_answer_get_requests(gateway):
    ok = gateway.get(
        "/webhooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": "meta-verify", "hub.challenge": "1158201444"},
    )
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert (
        gateway.get(
            "/webhooks/meta", params={"hub.mode": "subscribe", "hub.verify_token": "no", "hub.challenge": "1"}
        ).status_code
        == 403
    )
    crc = gateway.get("/webhooks/x", params={"crc_token": "9b4507b3-9040-4669-9ca3-6b94edb50553"})
    from connectors.signatures import x_crc_response

    assert crc.json() == {"response_token": x_crc_response("9b4507b3-9040-4669-9ca3-6b94edb50553", "x-test-secret")}


def test_the_generic_contacts_endpoint_still_works(gateway, contacts):
    payload = {
        "provider_id": "legacy-1",
        "connector": "api",
        "channel": "chat",
        "occurred_at": "2026-11-22T10:00:00Z",
        "identities": [{"kind": "email", "value": "a@example.it"}],
    }
    resp = gateway.post("/contacts", json=payload, headers=bearer(CONTACT_TOKEN))
    assert resp.status_code == 202 and resp.json()["event_id"] == event_id("api", "legacy-1")
    assert contacts.decoded(1)[0]["event_id"] == event_id("api", "legacy-1")


def test_the_openapi_description_names_the_webhook_route(gateway):
    assert "/webhooks/{connector}" in gateway.get("/openapi.json").json()["paths"]
