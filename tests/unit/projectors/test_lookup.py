"""Identity lookups normalise what the caller holds as ingest normalised what is stored."""

from __future__ import annotations

import pytest

from projectors.lookup import BadIdentity, Lookup, lookup_sql, normalise


@pytest.mark.parametrize(
    "written",
    [
        "giulia.rossi@example.it",
        "Giulia.Rossi@Example.IT",
        "  giulia.rossi@example.it ",
        "<giulia.rossi@example.it>",
        "mailto:Giulia.Rossi@example.it",
        "Giulia Rossi <GIULIA.ROSSI@example.it>",
    ],
)
def test_emails_in_any_case_and_wrapping(written):
    assert normalise("email", written, None, "IT") == Lookup("email", "giulia.rossi@example.it", None)


@pytest.mark.parametrize(
    "written",
    [
        "+393471234567",
        "+39 347 123 4567",
        " 39 347 123 4567",
        " 393471234567",  # a lost + (query string)
        "347 123 4567",
        "347-123-4567",
        "(347) 1234567",
        "0039 347 1234567",
        "whatsapp:+393471234567",
        "whatsapp: 393471234567",
        "tel:+39-347-123-4567",
        "sms:+393471234567",
        "393471234567",
    ],
)
def test_phones_in_any_written_form(written):
    assert normalise("phone", written, None, "IT") == Lookup("phone", "+393471234567", None)


def test_phones_use_the_default_region_for_national_numbers():
    assert normalise("phone", "06 12345678", None, "NL").value == "+31612345678"
    assert normalise("phone", " 31 6 12345678", None, "IT").value == "+31612345678"
    assert normalise("phone", "+39 02 1234 5678", None, "IT").value == "+390212345678"


@pytest.mark.parametrize(
    "written, platform, want",
    [
        ("giulia_r", "twitter", Lookup("social", "giulia_r", "twitter")),
        ("@Giulia_R", "twitter", Lookup("social", "giulia_r", "twitter")),
        ("@giulia_r", None, Lookup("social", "giulia_r", None)),
        ("@giulia_r", "X", Lookup("social", "giulia_r", "twitter")),
        ("https://x.com/Giulia_R", None, Lookup("social", "giulia_r", "twitter")),
        ("https://www.instagram.com/emre_k/", None, Lookup("social", "emre_k", "instagram")),
        ("twitter:@giulia_r", None, Lookup("social", "giulia_r", "twitter")),
    ],
)
def test_handles_with_or_without_at_or_as_a_profile_url(written, platform, want):
    assert normalise("social", written, platform, "IT") == want


def test_other_kinds_are_trimmed_and_exact():
    assert normalise("account", " 115310627314723954 ", "Shopify", "IT") == Lookup(
        "account", "115310627314723954", "shopify"
    )
    assert normalise("chat_visitor", "v-Abc ", "whatever", "IT") == Lookup("chat_visitor", "v-Abc", None)


@pytest.mark.parametrize(
    "kind, value",
    [
        ("email", "not-an-address"),
        ("phone", "12"),
        ("phone", " "),
        ("social", "@"),
        ("social", "http://[x/y"),
        ("account", "  "),
    ],
)
def test_what_cannot_be_an_identity_names_the_value_parameter(kind, value):
    with pytest.raises(BadIdentity) as exc:
        normalise(kind, value, None, "IT")
    assert exc.value.field == "value"


def test_the_query_compares_case_insensitively_only_where_ingest_lowercases():
    sql, params = lookup_sql("s", Lookup("email", "a@b.it", None))
    assert "lower(i.value) = %s" in sql and params == ["email", "a@b.it"]
    sql, params = lookup_sql("s", Lookup("account", "A-1", "shop"))
    assert params == ["account", "a-1", "A-1", "shop"]
