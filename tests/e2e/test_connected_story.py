"""The demo story of design.md through every component, as each audience reads it.

Signed provider webhooks (Shopify, X, email, agent console, Twilio Voice, web form, chat, review,
WhatsApp) go into the gateway; the stream worker resolves identities and stitches conversations;
the projectors build the read models; the read API answers. Every component is its own process.
"""

from __future__ import annotations

import random
import uuid

import httpx
import pytest

from threadline.secrets import secret
from threadline.tools.demo import SECRET_FIELDS, _post, _wait_for, _wait_visible, reader, story, with_demo_secrets
from threadline.tools.stack import apps
from threadline.process import free_port


@pytest.fixture(scope="module")
def told(services, catalog_topics, tmp_path_factory):
    settings = with_demo_secrets(
        services.settings.model_copy(
            update={
                "home": tmp_path_factory.mktemp("story-home"),
                "gateway_port": free_port(),
                "api_port": free_port(),
                "worker_ops_port": free_port(),
                "projector_ops_port": free_port(),
            }
        )
    )
    apps.start(settings)
    try:
        cast, steps = story(seed=random.randrange(10**6), tag=uuid.uuid4().hex[:6])
        keys = {name: secret(settings.connectors, name) for name in SECRET_FIELDS}
        gateway = f"http://{settings.endpoints.gateway_host}:{settings.endpoints.gateway_port}"
        api = f"http://{settings.endpoints.api_host}:{settings.endpoints.api_port}"
        with httpx.Client(timeout=30) as http, reader(api, settings, "support") as support:
            from connectors.generate import render

            for step in steps:
                _wait_visible(support, api, _post(http, gateway, keys, *render(step)))
        with reader(api, settings, "admin") as http:
            yield cast, steps, http
    finally:
        apps.stop(settings)


def test_the_phone_agent_sees_giulias_tweet_dm_email_and_order_number_with_the_clock_from_the_tweet(told):
    cast, steps, http = told
    giulia = cast["giulia"]
    card = _wait_for(http, "phone", giulia.phone, contacts=6, what="Giulia's contacts")
    assert {"kind": "order_number", "value": giulia.order} in [
        {"kind": f["kind"], "value": f["value"]} for f in card["facts"]
    ]
    kinds = {(i["kind"], i["value"]) for i in card["identities"]}
    assert ("email", giulia.email) in kinds and ("phone", giulia.phone) in kinds
    timeline = http.get(f"/customers/{card['customer_id']}/timeline").json()["items"]
    assert [t["channel"] for t in timeline] == ["store", "twitter", "twitter", "email", "twitter", "voice"]
    [open_conv] = card["open_conversations"]
    assert set(open_conv["channels"]) == {"twitter", "email", "voice"}
    tweet = steps[1]
    assert open_conv["opened_at"].startswith(tweet.at.isoformat()[:19])


def test_the_sales_rep_sees_the_support_contacts_and_the_talk_to_support_first_flag(told):
    cast, _, http = told
    card = _wait_for(http, "phone", cast["giulia"].phone, contacts=6, what="Giulia's contacts")
    ctx = http.get(f"/sales/customers/{card['customer_id']}").json()
    assert ctx["support_contacts_7d"] >= 3
    assert ctx["talk_to_support_first"] is True and ctx["talk_to_support_first_reasons"]
    assert ctx["last_purchase_at"] is not None


def test_sannes_chat_agent_sees_the_form_she_already_filled_in(told):
    cast, _, http = told
    card = _wait_for(http, "email", cast["sanne"].email, contacts=2, what="Sanne's form and chat")
    convs = card["open_conversations"] + card["prior_conversations"]
    assert len(convs) == 1 and set(convs[0]["channels"]) == {"web_form", "chat"}
    assert {"kind": "policy", "value": "ski"} in [{"kind": f["kind"], "value": f["value"]} for f in card["facts"]]


def test_marketing_sees_emres_review_and_consent(told):
    cast, _, http = told
    card = _wait_for(http, "social", cast["emre"].handle, contacts=1, what="Emre's review")
    [review] = http.get("/marketing/reviews", params={"customer_id": card["customer_id"]}).json()["items"]
    assert review["rating"] == 1 + cast["emre"].n % 5 and review["sentiment"] is not None
    consent = http.get(f"/marketing/customers/{card['customer_id']}/consent").json()["items"]
    assert [(c["purpose"], c["granted"]) for c in consent] == [("marketing", cast["emre"].n % 3 == 0)]


def test_giulias_access_bundle_holds_each_of_her_contacts_conversations_and_identities_and_nobody_elses(told):
    """Right of access for the demo's Giulia (privacy is on in the demo): the bundle the read API
    gives an admin holds what support sees of her and nothing of the rest of the cast."""
    import json

    cast, _, http = told
    giulia = cast["giulia"]
    card = _wait_for(http, "phone", giulia.phone, contacts=6, what="Giulia's contacts")
    cid = card["customer_id"]
    timeline = http.get(f"/customers/{cid}/timeline", params={"limit": 200}).json()["items"]
    conversations = http.get(f"/customers/{cid}/conversations", params={"limit": 200}).json()["items"]
    answer = http.get("/privacy/access", params={"identity": f"phone:{giulia.phone}"})
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert cid in bundle["customer_ids"]
    assert {c["event_id"] for c in bundle["contacts"]} == {t["event_id"] for t in timeline} and len(timeline) >= 6
    assert {c["conversation_id"] for c in conversations} <= {c["conversation_id"] for c in bundle["conversations"]}
    held = {(i["kind"], i["value"]) for i in bundle["identities"]}
    assert {(i["kind"], i["value"]) for i in card["identities"]} <= held
    assert ("email", giulia.email) in held and ("phone", giulia.phone) in held
    text = json.dumps(bundle, ensure_ascii=False)
    for name, other in cast.items():
        if name == "giulia":
            continue
        for value in (other.email, other.phone, other.handle, other.visitor):
            assert value not in text, f"{name}'s {value!r} is in Giulia's access bundle"
