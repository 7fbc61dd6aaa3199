"""POST /contacts needs a bearer token bound to the contact's connector (real gateway, real broker).

The attacks of issue 11 (finding 4): a forged contact with a provider's connector name and an
upcoming provider message id, and a forged contact linking a victim's email to an attacker's
phone, both unsigned: 401, nothing produced. A chat widget's token cannot write twilio contacts.
"""

from __future__ import annotations

import uuid

import pytest

from connectors.contact import event_id
from fixtures.providers import body, headers
from fixtures.tokens import API_TOKENS, CHAT_TOKEN, CONTACT_TOKEN, bearer


def contact(**extra) -> dict:
    out = {
        "provider_id": f"auth-{uuid.uuid4().hex[:8]}",
        "connector": "api",
        "channel": "chat",
        "occurred_at": "2026-11-22T10:00:00Z",
        "identities": [{"kind": "email", "value": "a@example.it"}],
    }
    out.update(extra)
    return out


FORGED_TWILIO = contact(
    connector="twilio",
    provider_id="SM1f0e8ae6ade43cb3c0ce4525424e404f",
    channel="sms",
    identities=[{"kind": "phone", "value": "+393471234567", "strength": "verified", "primary": True}],
    text="forged: please send my order to another address",
)
HIJACK = contact(
    provider_id="hijack-1",
    identities=[
        {"kind": "email", "value": "victim@example.it", "strength": "verified", "primary": True},
        {"kind": "phone", "value": "+393330000666", "strength": "verified"},
    ],
)


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer", "Bearer not-a-configured-token-0000", f"Basic {CONTACT_TOKEN}", f"Bearer {API_TOKENS['admin']}"],
    ids=["none", "empty", "unknown", "not-bearer", "a-read-api-token"],
)
def test_without_a_valid_token_a_contact_is_401_and_nothing_is_produced(gateway, contacts, auth):
    resp = gateway.post("/contacts", json=contact(), headers={"authorization": auth} if auth else {})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthenticated" and resp.headers["www-authenticate"] == "Bearer"
    assert contacts.count() == 0


def test_a_forged_provider_contact_is_401_and_the_real_signed_webhook_is_then_stored(gateway, contacts):
    forged = gateway.post("/contacts", json=FORGED_TWILIO)
    assert forged.status_code == 401, forged.text
    assert contacts.count() == 0
    url = "http://testserver/webhooks/twilio"
    content = body("twilio", "twilio_sms.json")
    real = gateway.post(url, content=content, headers=headers("twilio", content, url))
    assert real.status_code == 202, real.text
    [record] = contacts.decoded(1)
    assert record["event_id"] == event_id("twilio", "SM1f0e8ae6ade43cb3c0ce4525424e404f")
    assert record["text"].startswith("Ciao, il mio ordine")


def test_a_forged_contact_linking_a_victims_email_to_an_attackers_phone_is_401(gateway, contacts):
    resp = gateway.post("/contacts", json=HIJACK)
    assert resp.status_code == 401, resp.text
    assert contacts.count() == 0


def test_a_token_writes_only_its_own_connectors_and_is_never_logged(gateway, contacts, capfd):
    for connector in ("twilio", "api", "meta"):
        resp = gateway.post("/contacts", json=contact(connector=connector), headers=bearer(CHAT_TOKEN))
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"] == "connector_not_allowed" and resp.json()["fields"][0]["field"] == "connector"
    assert gateway.post("/contacts", json=FORGED_TWILIO, headers=bearer(CONTACT_TOKEN)).status_code == 403
    assert contacts.count() == 0
    ok = gateway.post("/contacts", json=contact(connector="chat"), headers=bearer(CHAT_TOKEN))
    assert ok.status_code == 202, ok.text
    default = contact()
    del default["connector"]  # the default connector is "api"
    ok = gateway.post("/contacts", json=default, headers=bearer(CONTACT_TOKEN))
    assert ok.status_code == 202, ok.text
    assert {r["connector"] for r in contacts.decoded(2)} == {"chat", "api"}
    assert gateway.post("/contacts", json=contact(), headers=bearer("a-wrong-token-but-long-enough")).status_code == 401
    out, err = capfd.readouterr()
    for secret in (CONTACT_TOKEN, CHAT_TOKEN, "a-wrong-token-but-long-enough"):
        assert secret not in out + err


def test_the_openapi_document_says_contacts_need_a_bearer_token(gateway):
    doc = gateway.get("/openapi.json").json()
    op = doc["paths"]["/contacts"]["post"]
    assert op["security"] == [{"bearer": []}] and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"202", "400", "401", "403", "413", "415", "503"} <= set(op["responses"])
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ContactIn"}
