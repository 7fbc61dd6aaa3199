"""``/customers/by-identity`` through the read API on real Kafka and PostgreSQL: each identity
kind found in the forms a caller may hold it, normalised as ingest normalises; the response says
which stored identity matched, the 404 names the value looked up, what cannot be one is 400."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fixtures.tokens import API_TOKENS, bearer, token_settings
from projectors.api import create_app


@pytest.fixture
def api(prefixed, built):
    with TestClient(
        create_app(prefixed.model_copy(update=token_settings())), headers=bearer(API_TOKENS["support"])
    ) as client:
        yield client


def found(api, **params) -> dict:
    r = api.get("/customers/by-identity", params=params)
    assert r.status_code == 200, (params, r.text)
    return r.json()


def test_emails_are_found_whatever_their_case_or_wrapping(api, built, unique):
    stored = f"giulia.{unique}@example.it"
    for written in (
        stored,
        stored.upper(),
        f"  Giulia.{unique}@Example.IT ",
        f"mailto:{stored}",
        f"Giulia Rossi <{stored.upper()}>",
    ):
        card = found(api, kind="email", value=written)
        assert card["customer_id"] == built.giulia, written
        assert card["matched"] == {"kind": "email", "platform": None, "value": stored}
        assert card["looked_up"] == {"kind": "email", "value": stored, "platform": None}


def test_phones_are_found_in_any_spacing_region_or_provider_form(api, built):
    for written in (
        "+393471234567",
        "+39 347 123 4567",
        "347 123 4567",
        "347-123-4567",
        "0039 347 1234567",
        "whatsapp:+393471234567",
        "tel:+39-347-123-4567",
    ):
        card = found(api, kind="phone", value=written)
        assert card["customer_id"] == built.giulia, written
        assert card["matched"]["value"] == "+393471234567"
    # a + written unencoded in the query string arrives as a space
    for raw in ("+393471234567", "+39%20347%20123%204567", "whatsapp:+393471234567"):
        r = api.get(f"/customers/by-identity?kind=phone&value={raw}")
        assert r.status_code == 200 and r.json()["customer_id"] == built.giulia, (raw, r.text)


def test_handles_are_found_with_or_without_at_any_case_or_as_a_profile_url(api, built, unique):
    handle = f"giulia_{unique}"
    for params in (
        {"value": handle, "platform": "twitter"},
        {"value": f"@{handle.upper()}", "platform": "twitter"},
        {"value": f"@{handle}"},
        {"value": f"https://x.com/{handle}"},
        {"value": handle, "platform": "X"},
    ):
        card = found(api, kind="social", **params)
        assert card["customer_id"] == built.giulia, params
        assert card["matched"] == {"kind": "social", "platform": "twitter", "value": handle}
    r = api.get("/customers/by-identity", params={"kind": "social", "value": f"@{handle}", "platform": "instagram"})
    assert r.status_code == 404


def test_other_kinds_are_exact_after_trimming(api, built, unique):
    assert found(api, kind="chat_visitor", value=f" v-{unique} ")["customer_id"] == built.giulia
    card = found(api, kind="account", value=f" acct-{unique} ", platform="Shop")
    assert card["matched"] == {"kind": "account", "platform": "shop", "value": f"acct-{unique}"}
    r = api.get("/customers/by-identity", params={"kind": "chat_visitor", "value": f"V-{unique}"})
    assert r.status_code == 404


def test_the_404_names_the_normalised_value_looked_up(api, built):
    r = api.get("/customers/by-identity", params={"kind": "email", "value": " Nobody@Example.ORG"})
    assert r.status_code == 404 and r.json()["detail"] == "no customer with email identity nobody@example.org"
    r = api.get("/customers/by-identity?kind=phone&value=+39%2006%2012345678")
    assert r.status_code == 404 and r.json()["detail"] == "no customer with phone identity +390612345678"


def test_what_cannot_be_an_identity_is_400_naming_the_value(api):
    for params in (
        {"kind": "email", "value": "not-an-address"},
        {"kind": "phone", "value": "12"},
        {"kind": "social", "value": "@"},
    ):
        r = api.get("/customers/by-identity", params=params)
        assert r.status_code == 400, (params, r.text)
        assert [f["field"] for f in r.json()["fields"]] == ["value"]
