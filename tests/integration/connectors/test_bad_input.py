"""Bad input to the gateway: 400 naming the field, or 202 + ingest DLQ for a signed provider payload
that cannot be mapped; never 500, nothing produced to contacts, no identity value in the logs
(issue 11, finding 5). Real gateway, real broker."""

from __future__ import annotations

import json

import pytest

from fixtures.providers import headers, raw
from fixtures.tokens import CONTACT_TOKEN, bearer
from threadline.http import MAX_FIELDS

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
LONG_ID = "7" * 400  # an identity value over IdentityIn's 320 characters
YEAR_OVERFLOW = "9999-12-31T23:59:59-05:00"


def contact(**extra) -> dict:
    out = {
        "provider_id": "bad-input-1",
        "connector": "api",
        "channel": "chat",
        "occurred_at": "2026-11-22T10:00:00Z",
        "identities": [{"kind": "email", "value": "bad.input@example.it"}],
        "text": "hello",
    }
    out.update(extra)
    return out


def post_contact(gateway, content: bytes):
    return gateway.post(
        "/contacts", content=content, headers={"content-type": "application/json", **bearer(CONTACT_TOKEN)}
    )


def signed(gateway, connector: str, content: bytes):
    url = f"http://testserver/webhooks/{connector}"
    return gateway.post(url, content=content, headers=headers(connector, content, url))


@pytest.mark.parametrize(
    "content, field",
    [
        (DEEP, "<body>"),
        (DEEP_OBJECT, "<body>"),
        (b'{"provider_id": "x", "text": "\\ud800"}', "text"),
        (json.dumps(contact(text="ok \\ud800")).replace("\\\\ud800", "\\ud800").encode(), "text"),
        (
            json.dumps(contact(identities=[{"kind": "email", "value": "a@b.it\\udfff"}]))
            .replace("\\\\udfff", "\\udfff")
            .encode(),
            "identities.0.value",
        ),
    ],
    ids=["deep-array", "deep-object", "surrogate", "surrogate-in-contact", "surrogate-in-identity"],
)
def test_json_we_cannot_carry_is_400_naming_the_field(gateway, contacts, content, field):
    resp = post_contact(gateway, content)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "malformed_json" and resp.json()["fields"][0]["field"] == field
    assert contacts.count() == 0


@pytest.mark.parametrize(
    "change, field",
    [
        ({"occurred_at": YEAR_OVERFLOW}, "occurred_at"),
        ({"occurred_at": "0001-01-01T00:00:00+01:00"}, "occurred_at"),
        ({"occurred_at": 1795349700}, "occurred_at"),
    ],
    ids=["year-overflow", "year-underflow", "epoch-number"],
)
def test_a_contact_out_of_range_is_400_naming_the_field(gateway, contacts, change, field):
    resp = post_contact(gateway, json.dumps(contact(**change)).encode())
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_body" and field in [f["field"] for f in resp.json()["fields"]]
    assert contacts.count() == 0


def test_sixty_thousand_unknown_fields_get_a_small_error_body(gateway, contacts):
    body = contact() | {f"u{i}": 0 for i in range(60_000)}
    content = json.dumps(body, separators=(",", ":")).encode()
    assert len(content) < 1_000_000  # under the body limit: it is the error that must stay small
    resp = post_contact(gateway, content)
    assert resp.status_code == 400
    err = resp.json()
    assert len(resp.content) < 10_000, len(resp.content)
    assert len(err["fields"]) == MAX_FIELDS and err["fields_omitted"] == 60_000 - MAX_FIELDS
    assert err["fields"][0] == {"field": "u0", "problem": "Extra inputs are not permitted"}
    assert contacts.count() == 0


@pytest.mark.parametrize("connector", ["chat", "meta", "x", "shopify"])
@pytest.mark.parametrize("content", [DEEP, DEEP_OBJECT], ids=["deep-array", "deep-object"])
def test_a_signed_provider_body_nested_100000_deep_is_400(gateway, contacts, dlq, connector, content):
    resp = signed(gateway, connector, content)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_body" and resp.json()["fields"][0]["field"] == "<body>"
    assert contacts.count() == 0 and dlq.count() == 0


def meta_with_long_sender() -> bytes:
    payload = json.loads(raw("meta_messenger.json"))
    payload["entry"][0]["messaging"][0]["sender"]["id"] = LONG_ID
    return json.dumps(payload).encode()


def shopify_with_long_customer() -> bytes:
    payload = json.loads(raw("shopify_order.json"))
    payload["customer"]["id"] = LONG_ID
    return json.dumps(payload).encode()


def chat_in_year_10000() -> bytes:
    payload = json.loads(raw("chat.json"))
    payload["sent_at"] = YEAR_OVERFLOW
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "connector, make, reason",
    [
        ("meta", meta_with_long_sender, "account identity"),
        ("shopify", shopify_with_long_customer, "account identity"),
        ("chat", chat_in_year_10000, "out of range"),
    ],
    ids=["meta-sender-over-320", "shopify-customer-over-320", "chat-year-overflow"],
)
def test_a_signed_payload_we_cannot_map_is_202_and_dead_lettered_without_logging_the_value(
    gateway, contacts, dlq, capfd, connector, make, reason
):
    content = make()
    resp = signed(gateway, connector, content)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": [], "dead_lettered": 1}
    [record] = dlq.read(1)
    assert reason in dict(record.headers)["reason"].decode()
    assert contacts.count() == 0
    out, err = capfd.readouterr()
    assert LONG_ID not in out + err
