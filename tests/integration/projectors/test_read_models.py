"""Support, sales and marketing read models from contract events on real Kafka and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import story as st
from fixtures.tokens import API_TOKENS, bearer, token_settings
from projectors.api import create_app


@pytest.fixture
def built(prefixed, sources, codec, unique):
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s, garbage=[b"\x07not-avro"])
    st.project(prefixed, sources, codec=codec)
    return s


@pytest.fixture
def api(prefixed, built):
    with TestClient(
        create_app(prefixed.model_copy(update=token_settings())), headers=bearer(API_TOKENS["admin"])
    ) as client:
        yield client


def test_the_phone_agent_sees_the_whole_thread_across_channels_with_the_switches(api, built):
    r = api.get(f"/customers/{built.giulia}/timeline")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["channel"] for i in items] == ["chat", "store", "twitter", "twitter", "email", "voice"]
    assert [i["channel_switch"] for i in items] == [False, True, True, False, True, True]
    assert items[3]["text"] == "Numero ordine 4711" and items[3]["conversation_id"] == built.conv_giulia


def test_the_context_card_knows_identities_facts_language_order_and_the_merged_id(api, built):
    card = api.get(f"/customers/{built.giulia}").json()
    assert card["merged_ids"] == [built.giulia_old]
    assert card["last_order"] == "4711" and card["language"] == "it"
    kinds = {(i["kind"], i["platform"]) for i in card["identities"]}
    assert {
        ("chat_visitor", None),
        ("email", None),
        ("phone", None),
        ("social", "twitter"),
        ("account", "shop"),
    } <= kinds
    assert [c["conversation_id"] for c in card["open_conversations"]] == [built.conv_giulia]
    assert card["sentiment"]["latest"] < 0


def test_an_absorbed_id_and_any_identity_lead_to_the_surviving_customer(api, built, unique):
    assert api.get(f"/customers/{built.giulia_old}").json()["customer_id"] == built.giulia
    r = api.get("/customers/by-identity", params={"kind": "social", "value": f"giulia_{unique}", "platform": "twitter"})
    assert r.status_code == 200 and r.json()["customer_id"] == built.giulia
    r = api.get("/customers/by-identity", params={"kind": "chat_visitor", "value": f"v-{unique}"})
    assert r.json()["customer_id"] == built.giulia


def test_the_inbox_lists_open_conversations_filtered_by_sla_state_and_channel(api, built):
    breached = api.get("/support/inbox", params={"sla_state": "breached", "limit": 500}).json()["items"]
    mine = [c for c in breached if c["conversation_id"] == built.conv_giulia]
    assert len(mine) == 1
    assert mine[0]["channel"] == "voice" and mine[0]["waiting_on"] == "agent"
    assert mine[0]["last_message_text"] == "Chiamo per l'ordine rotto"
    assert all(c["sla_state"] == "breached" for c in breached)
    running = api.get("/support/inbox", params={"sla_state": "running", "limit": 500}).json()["items"]
    assert built.conv_giulia not in [c["conversation_id"] for c in running]
    by_email = api.get("/support/inbox", params={"channel": "email", "limit": 500}).json()["items"]
    assert built.conv_giulia not in [c["conversation_id"] for c in by_email]
    conv = api.get(f"/conversations/{built.conv_emre}").json()
    assert conv["state"] == "resolved" and conv["sla_state"] == "met" and len(conv["events"]) == 4


def test_the_sales_rep_sees_recent_support_contacts_the_last_purchase_and_the_flag(api, built):
    r = api.get(f"/sales/customers/{built.giulia}").json()
    assert r["support_contacts_7d"] == 4 and r["support_contacts_30d"] == 5
    assert r["open_conversations"] == 1 and r["breached_slas_7d"] == 1
    assert r["last_purchase_at"] is not None
    assert r["talk_to_support_first"] is True
    assert "1 open support conversation(s)" in r["talk_to_support_first_reasons"]


def test_marketing_sees_the_consent_response_times_and_segments_and_no_review_of_a_withdrawn_customer(api, built):
    # Emre's review withdrew his marketing consent (the latest signal): marketing's reviews and
    # engagement leave him out (docs/privacy.md, "Consent ledger")
    assert api.get("/marketing/reviews", params={"customer_id": built.emre}).json()["items"] == []
    consent = api.get(f"/marketing/customers/{built.emre}/consent").json()["items"]
    assert {(c["channel"], c["purpose"], c["granted"]) for c in consent} == {
        ("instagram", "marketing", False),
        ("email", "newsletter", True),
    }
    # Emre granted marketing on Instagram by the form, then withdrew it with his review, later in
    # event time: the consent ledger (projectors/consent.py) keeps him out of the segments
    seg = api.get(f"/marketing/customers/{built.emre}/segments").json()
    assert seg["segments"] == [] and seg["consent"] == "withdrawn" and seg["signals"] is None
    ledger = api.get(f"/marketing/customers/{built.emre}/consent-ledger").json()
    assert [(x["purpose"], x["channel"], x["granted"]) for x in ledger["ledger"]] == [
        ("marketing", "instagram", True),
        ("newsletter", "email", True),
        ("marketing", "instagram", False),
    ]
    assert ledger["marketing_withdrawn"]
    day = built.contacts[6]["occurred_at"].date().isoformat()
    eng = api.get("/marketing/engagement", params={"from": day, "channel": "review"}).json()["items"]
    assert not any(row["day"] == day for row in eng)  # his review was the only one
    tweets = api.get("/marketing/engagement", params={"channel": "twitter"}).json()["items"]
    assert sum(row["contacts"] for row in tweets) >= 2  # Giulia gave no signal: her contacts count
    rt = {x["channel"]: x for x in api.get("/marketing/response-times").json()["items"]}
    assert rt["web_form"]["p50_seconds"] == 600


def test_unknown_ids_are_404_and_bad_parameters_400_naming_them(api, built):
    for path in (
        "/customers/nobody",
        "/customers/nobody/timeline",
        "/sales/customers/nobody",
        "/marketing/customers/nobody/consent",
        "/conversations/nope",
    ):
        r = api.get(path)
        assert r.status_code == 404 and r.json()["error"] == "not_found", path
    r = api.get("/customers/by-identity", params={"kind": "email", "value": "nobody@example.org"})
    assert r.status_code == 404
    for path, params, field in [
        ("/support/inbox", {"sla_state": "late"}, "sla_state"),
        ("/support/inbox", {"limit": 0}, "limit"),
        ("/marketing/engagement", {"from": "yesterday"}, "from"),
        ("/marketing/reviews", {"min_rating": 9}, "min_rating"),
        ("/customers/by-identity", {"kind": "fax", "value": "1"}, "kind"),
    ]:
        r = api.get(path, params=params)
        assert r.status_code == 400, (path, r.text)
        assert field in [f["field"] for f in r.json()["fields"]], (path, r.json())


def test_pages_say_where_the_next_one_starts(api, built):
    first = api.get(f"/customers/{built.giulia}/timeline", params={"limit": 4}).json()
    assert len(first["items"]) == 4 and first["next_offset"] == 4
    rest = api.get(f"/customers/{built.giulia}/timeline", params={"offset": 4, "limit": 4}).json()
    assert len(rest["items"]) == 2 and rest["next_offset"] is None


def test_the_api_describes_every_read_route_in_openapi(api):
    paths = api.get("/openapi.json").json()["paths"]
    for p in (
        "/customers/{customer_id}",
        "/customers/by-identity",
        "/customers/{customer_id}/timeline",
        "/support/inbox",
        "/sales/customers/{customer_id}",
        "/marketing/engagement",
        "/marketing/customers/{customer_id}/consent",
        "/projections",
    ):
        assert p in paths
