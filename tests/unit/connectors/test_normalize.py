"""Normalization: pure functions, unit and property-based tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import MalformedPayload
from connectors.normalize import (
    FactPatterns,
    detect_language,
    email_norm,
    extract_facts,
    handle_norm,
    parse_time,
    phone_e164,
    phones_in_text,
)

REGIONS = ["IT", "PL", "NL", "TR", "GB", "DE", "US"]


@st.composite
def phone_numbers(draw):
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    fmt = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ]
        )
    )
    return (
        region,
        phonenumbers.format_number(example, fmt),
        phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164),
    )


@given(phone_numbers())
def test_any_way_of_writing_a_number_gives_the_same_e164(case):
    region, written, e164 = case
    assert phone_e164(written, region) == e164


@given(phone_numbers(), st.sampled_from(["", "whatsapp:", "tel:"]))
def test_e164_is_idempotent_and_prefixes_are_dropped(case, prefix):
    region, _, e164 = case
    assert phone_e164(prefix + e164, "IT") == e164
    assert phone_e164(phone_e164(e164, region), "IT") == e164


def test_the_default_region_decides_numbers_without_a_country_code():
    assert phone_e164("06 12345678", "NL") == "+31612345678"
    assert phone_e164("347 123 4567", "IT") == "+393471234567"
    assert phone_e164("0048 601 234 567", "IT") == "+48601234567"


def test_whatsapp_ids_without_plus_are_international():
    assert phone_e164("447700123456", "IT") == "+447700123456"


@pytest.mark.parametrize("junk", ["", "abc", "123", "+1555", "201"])
def test_what_is_not_a_phone_number_is_none(junk):
    assert phone_e164(junk, "IT") is None


def test_phone_numbers_in_a_signature_are_found():
    assert phones_in_text("Giulia Rossi\nTel. +39 347 123 4567 / ufficio 02 8765 4321", "IT") == [
        "+393471234567",
        "+390287654321",
    ]


@given(
    st.from_regex(r"[a-z0-9._]{1,20}@[a-z0-9]{1,10}\.(it|nl|pl|com)", fullmatch=True),
    st.sampled_from(["", " ", "\t", "<"]),
    st.booleans(),
)
def test_emails_are_trimmed_and_lowercased_idempotently(address, pad, upper):
    written = pad + (address.upper() if upper else address) + (">" if pad == "<" else pad)
    assert email_norm(written) == address
    assert email_norm(email_norm(written)) == address


@pytest.mark.parametrize("junk", ["", "no-at-sign", "a@b", "two@@example.it"])
def test_what_is_not_an_email_is_none(junk):
    assert email_norm(junk) is None


@given(st.from_regex(r"[A-Za-z0-9_.]{1,15}", fullmatch=True), st.sampled_from(["", "@", " @"]))
def test_handles_lose_the_at_and_case(handle, prefix):
    assert handle_norm(prefix + handle) == handle.lower()
    assert handle_norm(handle_norm(prefix + handle)) == handle.lower()


@settings(max_examples=200)
@given(
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(min_value=-12, max_value=14),
)
def test_every_provider_timestamp_format_gives_the_same_utc_instant(naive, offset_h):
    local = naive.replace(tzinfo=timezone(timedelta(hours=offset_h)))
    want = local.astimezone(UTC)
    epoch = int(local.timestamp())
    for written in (
        epoch,
        str(epoch),
        str(epoch * 1000),
        local.isoformat(),
        format_datetime(local),
        local.strftime("%a %b %d %H:%M:%S %z %Y"),
    ):
        got = parse_time(written)
        assert got == want and got.tzinfo is UTC, written


def test_a_time_without_a_zone_is_rejected_not_guessed():
    with pytest.raises(MalformedPayload, match="time zone"):
        parse_time("2026-11-22T10:00:00")
    with pytest.raises(MalformedPayload):
        parse_time("yesterday")


@pytest.mark.parametrize(
    "text,lang",
    [
        ("Il mio ordine è arrivato rotto, il pacco era aperto", "it"),
        ("Kiedy dostanę zwrot pieniędzy za zamówienie?", "pl"),
        ("Ik heb het formulier al ingevuld voor de skiverzekering", "nl"),
        ("Siparişim eksik geldi, bir ürün kutuda yoktu", "tr"),
        ("Can I change my delivery address for this order?", "en"),
    ],
)
def test_the_language_of_the_text_is_detected(text, lang):
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", [None, "", "ok", "4711", "👍"])
def test_text_too_short_has_no_language(text):
    assert detect_language(text) is None


DEFAULT = FactPatterns.from_json(None)


@given(
    st.integers(min_value=1000, max_value=10**9),
    st.sampled_from(
        [
            "my order {n} arrived broken",
            "Il numero dell'ordine è {n}.",
            "bestelling {n} is niet bezorgd",
            "zamówienie nr {n} przyszło uszkodzone",
            "Siparişim {n} eksik geldi",
            "Order #{n} shipped",
        ]
    ),
)
def test_order_numbers_are_found_in_every_language(n, template):
    facts = extract_facts(template.format(n=n), DEFAULT)
    assert [(f.kind, f.value, f.source) for f in facts] == [("order_number", str(n), "text")]


def test_account_numbers_are_facts_and_dates_are_not_orders():
    assert [(f.kind, f.value) for f in extract_facts("klantnummer 55512345", DEFAULT)] == [
        ("account_number", "55512345")
    ]
    assert extract_facts("order arrived on 2026-11-20", DEFAULT) == []


def test_fact_patterns_are_configurable():
    patterns = FactPatterns.from_json(json.dumps({"ticket": r"\bT-(\d{3,})"}))
    assert [(f.kind, f.value) for f in extract_facts("see T-4242 and order 100234", patterns)] == [("ticket", "4242")]


def test_a_datetime_a_model_parsed_is_taken_as_its_iso_form_was():
    from connectors.normalize import parse_time

    for dt in (
        datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    ):
        got = parse_time(dt, "sent_at")
        assert got == parse_time(dt.isoformat(), "sent_at") and got.tzinfo is UTC
    with pytest.raises(MalformedPayload, match="without a time zone"):
        parse_time(datetime(2026, 11, 22, 10, 0), "sent_at")


def test_a_context_at_a_time_is_the_context_with_that_time():
    from dataclasses import replace

    from connectors.base import MapContext

    base = MapContext(region="NL", languages=("nl", "en"))
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert base.at(now) == replace(base, received_at=now) and base.received_at is None
