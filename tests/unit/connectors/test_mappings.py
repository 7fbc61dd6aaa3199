"""Provider payloads to contacts: the parts the gateway tests do not spell out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors import asterisk_cdr, email, generate, mbox
from connectors.base import MapContext, Rejected, WebhookRequest
from connectors.contact import ContactIn, event_id
from connectors.errors import Unmappable
from connectors.imap import ImapAccount, uids_after
from connectors.table import CONNECTORS
from threadline.secrets import secret
from fixtures.providers import raw
from threadline.errors import ConfigError
from threadline.settings import Settings

CTX = MapContext(received_at=datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    "text,said,signature",
    [
        (
            "Hi,\n\nthe parcel is broken.\n\n-- \nTom\n+44 7700 900123\n",
            "Hi,\n\nthe parcel is broken.",
            "-- \nTom\n+44 7700 900123",
        ),
        (
            "Ciao, ecco la foto.\n\nIl giorno sab 21 nov alle 18:00 Support ha scritto:\n> Mandi una foto?\n",
            "Ciao, ecco la foto.",
            "",
        ),
        ("Dank je.\n\nOp za 21 nov. 2026 om 18:00 schreef Support <s@x.nl>:\n> Hallo\n", "Dank je.", ""),
        ("Dziękuję.\n\nW dniu 21.11.2026 o 18:00 Support napisał(a):\n> Dzień dobry\n", "Dziękuję.", ""),
        ("Teşekkürler.\n\n21 Kas 2026 tarihinde Support şunu yazdı:\n> Merhaba\n", "Teşekkürler.", ""),
        ("Thanks.\n\n-----Original Message-----\nFrom: Support\nSent: today\n", "Thanks.", ""),
        (
            "Zie bijlage.\n\nMet vriendelijke groet,\nSanne de Vries\n06 12345678\n",
            "Zie bijlage.",
            "Met vriendelijke groet,\nSanne de Vries\n06 12345678",
        ),
    ],
)
def test_quoted_replies_and_signatures_are_kept_out_of_the_text(text, said, signature):
    assert email.split_reply(text) == (said, signature)


def test_signature_phones_are_identity_hints_and_thread_headers_are_kept():
    c = email.to_contact(raw("email_reply.eml"), CTX)
    assert [(i.kind, i.value, i.strength, i.primary) for i in c.identities] == [
        ("email", "giulia.rossi@example.it", "asserted", True),
        ("phone", "+393471234567", "hint", False),
    ]
    assert "ha scritto" not in c.text and "Tel." not in c.text and "Cordiali" not in c.text
    assert c.thread.references == ["<CAF=giulia.1@mail.example.it>", "<reply.1@shop.example>"]
    assert c.occurred_at == datetime(2026, 11, 22, 9, 2, 3, tzinfo=UTC)


def test_a_message_from_our_own_mailbox_is_an_outbound_agent_reply():
    reply = raw("email_reply.eml").replace(
        b"From: Giulia Rossi <Giulia.Rossi@Example.IT>\r\nTo: Support <support@shop.example>",
        b"From: Support <support@shop.example>\r\nTo: Giulia Rossi <Giulia.Rossi@Example.IT>",
    )
    c = email.to_contact(reply, CTX, own_addresses=frozenset({"support@shop.example"}))
    assert (c.direction, c.actor.role, c.identities[0].value) == ("outbound", "agent", "giulia.rossi@example.it")


def test_a_message_without_message_id_gets_a_stable_id_from_its_bytes():
    data = raw("email_reply.eml").replace(b"Message-ID: <CAF=giulia.2@mail.example.it>\r\n", b"")
    a, b = email.to_contact(data, CTX), email.to_contact(data, CTX)
    assert a.provider_id == b.provider_id and a.provider_id.startswith("sha256:")


def test_web_form_fields_become_identities_facts_and_consent():
    req = WebhookRequest("web-form", "u", {"content-type": "application/json"}, raw("web_form.json"), CTX.received_at)
    (c,) = CONNECTORS["web-form"].parse(req, CTX)
    assert [(i.kind, i.value) for i in c.identities] == [
        ("email", "sanne.devries@example.nl"),
        ("phone", "+31612345678"),
        ("cookie", "v-5f2c9a"),
    ]
    assert {(f.kind, f.value) for f in c.facts} >= {
        ("policy", "ski"),
        ("destination", "Oostenrijk"),
        ("travel_dates", "2027-01-10/2027-01-17"),
    }
    assert [(x.purpose, x.granted) for x in c.consent] == [("newsletter", True)]
    assert c.text == "Ik wil graag een skiverzekering voor het hele gezin." and c.language == "nl"


def test_shopify_orders_carry_purchase_facts_and_marketing_consent():
    req = WebhookRequest(
        "shopify", "u", {"x-shopify-topic": "orders/create"}, raw("shopify_order.json"), CTX.received_at
    )
    (c,) = CONNECTORS["shopify"].parse(req, CTX)
    assert (c.channel, c.event_type, c.occurred_at) == (
        "store",
        "order.created",
        datetime(2026, 11, 20, 17, 5, 12, tzinfo=UTC),
    )
    assert ("order_number", "100234") in {(f.kind, f.value) for f in c.facts}
    assert [(i.kind, i.value) for i in c.identities] == [
        ("email", "giulia.rossi@example.it"),
        ("phone", "+393471234567"),
        ("account", "115310627314723954"),
    ]
    assert [(x.purpose, x.granted) for x in c.consent] == [("marketing", True)]


def test_shopify_address_phones_are_hints_beside_the_customers_phone_and_email():
    import json

    order = json.loads(raw("shopify_order.json"))
    order["customer"]["phone"] = "+39 347 123 4567"
    order["shipping_address"]["phone"] = "+39 02 1234 5678"  # the parcel's recipient, maybe not the buyer
    req = WebhookRequest(
        "shopify", "u", {"x-shopify-topic": "orders/create"}, json.dumps(order).encode(), CTX.received_at
    )
    (c,) = CONNECTORS["shopify"].parse(req, CTX)
    assert [(i.kind, i.value, i.strength) for i in c.identities] == [
        ("email", "giulia.rossi@example.it", "asserted"),
        ("phone", "+393471234567", "asserted"),
        ("phone", "+390212345678", "hint"),
        ("account", "115310627314723954", "verified"),
    ]
    # no customer phone: the address phone is still only a hint; an address that is not an object is none
    order["customer"]["phone"], order["billing_address"] = None, "Via Torino 12"
    (c,) = CONNECTORS["shopify"].parse(
        WebhookRequest(
            "shopify", "u", {"x-shopify-topic": "orders/create"}, json.dumps(order).encode(), CTX.received_at
        ),
        CTX,
    )
    assert [(i.value, i.strength) for i in c.identities if i.kind == "phone"] == [("+390212345678", "hint")]


def test_the_mbox_splitter_keeps_line_numbers_and_undoes_from_quoting():
    parts = list(mbox.split_mbox(raw("inbox.mbox")))
    assert [line for line, _, _ in parts] == [1, 16, 31]
    assert b"\nFrom the courier's note" in parts[0][2]


def test_mbox_records_report_what_cannot_be_mapped_by_line():
    out = list(mbox.records(raw("inbox.mbox"), CTX))
    assert [type(item).__name__ for _, _, item in out] == ["ContactIn", "ContactIn", "Rejected"]
    assert (out[2][0], out[2][2].reason) == ("line 31", "no valid From address")


def test_cdr_rows_map_to_voice_and_ivr_contacts_and_bad_rows_are_reported():
    out = list(asterisk_cdr.records(raw("Master.csv"), CTX))
    contacts = [(w, i) for w, _, i in out if isinstance(i, ContactIn)]
    rejected = [(w, i.reason) for w, _, i in out if isinstance(i, Rejected)]
    assert [(w, c.channel, c.direction, c.identities[0].value) for w, c in contacts] == [
        ("line 1", "voice", "inbound", "+393471234567"),
        ("line 2", "voice", "outbound", "+48601234567"),
        ("line 4", "ivr", "inbound", "+31612345678"),
    ]
    assert contacts[0][1].occurred_at == datetime(2026, 11, 22, 12, 14, 5, tzinfo=UTC)
    assert contacts[0][1].actor.display_name == "Giulia Rossi" and contacts[0][1].thread.call_id == "1795356845.18"
    assert contacts[2][1].metadata["menu_choice"] == "2"
    assert rejected == [
        ("line 3", "neither src nor dst is a phone number"),
        ("line 5", "start: not a time in YYYY-MM-DD HH:MM:SS: 'not a time'"),
    ]


def test_cdr_times_follow_the_configured_zone():
    ctx = MapContext(cdr_timezone="Europe/Rome")
    (first, *_) = [i for _, _, i in asterisk_cdr.records(raw("Master.csv"), ctx)]
    assert first.occurred_at == datetime(2026, 11, 22, 11, 14, 5, tzinfo=UTC)


def test_cdr_rows_too_short_are_unmappable():
    with pytest.raises(Unmappable, match="columns"):
        asterisk_cdr.row_to_contact(["", "+393471234567"], CTX, b"")


def test_imap_search_answers_never_repeat_old_uids():
    assert uids_after(b"7", 7) == []
    assert uids_after(b"8 9 12", 7) == [8, 9, 12]


def test_the_imap_account_never_shows_its_password():
    assert "s3cret" not in repr(ImapAccount("h", 993, "u", "s3cret"))


def test_secrets_come_from_settings_or_files_and_never_print(tmp_path):
    f = tmp_path / "token"
    f.write_text("from-file\n")
    s = Settings(twilio_auth_token="direct", meta_app_secret_file=f)
    assert (
        secret(s.connectors, "twilio_auth_token") == "direct" and secret(s.connectors, "meta_app_secret") == "from-file"
    )
    assert secret(s.connectors, "x_consumer_secret") is None
    assert "direct" not in repr(s) and "direct" not in str(s.model_dump(mode="json"))
    assert s.to_env()["THREADLINE_TWILIO_AUTH_TOKEN"] == "direct"  # child processes get the real value
    with pytest.raises(ConfigError, match="cannot read"):
        secret(Settings(x_consumer_secret_file=tmp_path / "missing").connectors, "x_consumer_secret")


def test_generated_traffic_is_deterministic_per_seed_and_maps_without_rejects():
    a, b = list(generate.traffic(15, seed=3)), list(generate.traffic(15, seed=3))
    assert a == b and a != list(generate.traffic(15, seed=4))
    channels, langs = set(), set()
    for connector, body in a:
        req = WebhookRequest(connector, "u", {"x-shopify-topic": "orders/create"}, body, CTX.received_at)
        for item in CONNECTORS[connector].parse(req, CTX):
            assert isinstance(item, ContactIn), item
            channels.add(item.channel)
            langs.add(item.language)
    assert {"twitter", "email", "voice", "web_form", "chat", "review", "whatsapp", "store"} <= channels
    assert {"it", "pl", "nl", "tr", "en"} <= langs


def test_a_customer_switches_channels_social_first_then_dm_email_call():
    steps = generate.journeys(generate.population(1), agents=False)
    assert [s.kind for s in steps] == ["post", "dm", "email", "call"]
    assert [s.at for s in steps] == sorted(s.at for s in steps)


def test_each_customer_has_several_identities():
    c = generate.population(5)[2]
    assert c.email and c.phone.startswith("+") and c.handle and c.x_id and c.visitor
    assert event_id("x", "a") != event_id("x", "b")
