"""Each provider's own published examples, checked against our signature functions and through
the gateway's decision (connectors.webhooks.handle). Where each vector comes from is noted."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from connectors.base import MapContext, WebhookRequest
from connectors.signatures import (
    hub_signature_256,
    meta_escaped,
    meta_signed,
    shopify_hmac,
    twilio_body_sha256,
    twilio_json_valid,
    twilio_signature,
    twilio_url_variants,
    twilio_valid,
)
from connectors.webhooks import handle
from fixtures.providers import SECRETS, body

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

# -- Twilio ----------------------------------------------------------------------------------------
# twilio/twilio-python, tests/unit/test_request_validator.py (ValidationTest.setUp): the vectors
# Twilio's helper library is tested with. Auth token "12345".
TOKEN = "12345"
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
    ("Caller", "+14158675309"),
]


def test_twilio_helper_vector_compute_signature():
    # test_compute_signature
    assert twilio_signature(URI, PARAMS, TOKEN) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_valid(URI, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", TOKEN)


def test_twilio_helper_vector_repeated_parameters():
    # test_compute_signature_duplicate_multi_dict / _query_dict: names sorted, each name's values
    # sorted, a repeated identical pair counted once
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
    assert twilio_signature(URI, params, TOKEN) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert twilio_valid(URI, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", TOKEN)


@pytest.mark.parametrize(
    "uri,signature,case",
    [
        (URI.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "test_validation_removes_port_on_https"),
        (
            URI.replace(".com", ".com:1234").replace("https", "http"),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            "test_validation_removes_port_on_http (signature over the http URI with port 1234)",
        ),
        (URI, "kvajT1Ptam85bY51eRf/AJRuM3w=", "test_validation_adds_port_on_https (signature over :443)"),
        (URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4=", "test_validation_adds_port_on_http (over :80)"),
    ],
)
def test_twilio_helper_vectors_the_url_with_and_without_its_port(uri, signature, case):
    assert twilio_valid(uri, PARAMS, signature, TOKEN), case


def test_twilio_helper_vector_json_body_with_body_sha256():
    # test_compute_hash_unicode and test_validation_of_body_succeeds
    content = b'{"property": "value", "boolean": true}'
    digest = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert twilio_body_sha256(content) == digest
    assert twilio_json_valid(f"{URI}&bodySHA256={digest}", content, "a9nBmqA0ju/hNViExpshrM61xv4=", TOKEN)
    # the body checked on its own: another body under the same signed URL fails
    assert not twilio_json_valid(
        f"{URI}&bodySHA256={digest}", content.replace(b"true", b"false"), "a9nBmqA0ju/hNViExpshrM61xv4=", TOKEN
    )
    assert not twilio_json_valid(URI, content, twilio_signature(URI, [], TOKEN), TOKEN)  # no bodySHA256


def test_twilio_snippet_body_hash():
    # twilio-samples/api-snippets, security/signature_validation_json/*: the documented body and
    # the bodySHA256 of its example URL
    content = b'{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}'
    assert twilio_body_sha256(content) == "5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9"


def test_twilio_documentation_example():
    # twilio.com/docs/usage/webhooks/webhooks-security ("Validating signatures from Twilio"):
    # auth token 12345, the Gather example's parameters
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert twilio_valid(URI, params.items(), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", TOKEN)


def test_the_url_variants_are_the_url_without_and_with_its_port():
    assert twilio_url_variants("https://a.example/x?q=1") == ("https://a.example/x?q=1", "https://a.example:443/x?q=1")
    assert twilio_url_variants("http://a.example:80/x") == ("http://a.example:80/x", "http://a.example/x")
    assert twilio_url_variants("https://[2001:db8::1]/x") == ("https://[2001:db8::1]/x", "https://[2001:db8::1]:443/x")


# Through the gateway's decision: the connector verifies what the helper library accepts.
def twilio_request(url: str, content: bytes, signature: str, ctype: str, connector: str = "twilio"):
    hdrs = {"content-type": ctype, "x-twilio-signature": signature}
    return handle(WebhookRequest(connector, url, hdrs, content, NOW), SECRETS, MapContext(received_at=NOW), 1_000_000)


PUBLIC = "https://hooks.example.org/twilio/sms"
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "received,signed",
    [
        (PUBLIC, "https://hooks.example.org:443/twilio/sms"),  # Twilio signed with the default port
        ("https://hooks.example.org:443/twilio/sms", PUBLIC),  # the URL configured with it, Twilio without
        ("http://hooks.example.org/twilio/sms", "http://hooks.example.org:80/twilio/sms"),
    ],
)
def test_a_twilio_webhook_validates_with_and_without_the_default_port(received, signed):
    content = body("twilio", "twilio_sms.json")
    sig = twilio_signature(signed, _form(content), SECRETS["twilio_auth_token"])
    assert twilio_request(received, content, sig, FORM).status == 202


def test_a_twilio_webhook_with_a_repeated_parameter_validates_as_twilio_signs_it():
    content = (
        body("twilio", "twilio_sms.json")
        + b"&MediaUrl0=https%3A%2F%2Fa.example%2F1&MediaUrl0=https%3A%2F%2Fa.example%2F1"
    )
    sig = twilio_signature(PUBLIC, _form(content), SECRETS["twilio_auth_token"])
    twice = _sign_counting_repeats(PUBLIC, _form(content), SECRETS["twilio_auth_token"])
    assert sig != twice
    assert twilio_request(PUBLIC, content, sig, FORM).status == 202
    assert twilio_request(PUBLIC, content, twice, FORM).status == 401


@pytest.mark.parametrize(
    "connector,fixture", [("twilio", "twilio_sms.json"), ("twilio-voice", "twilio_voice_status.json")]
)
def test_a_json_bodied_twilio_webhook_with_body_sha256_is_accepted(connector, fixture):
    content = json.dumps(json.loads(_fixture(fixture))).encode()  # the same parameters as a JSON object
    url = f"{PUBLIC}?bodySHA256={hashlib.sha256(content).hexdigest()}"
    sig = twilio_signature(url, [], SECRETS["twilio_auth_token"])
    out = twilio_request(url, content, sig, "application/json", connector)
    assert (out.status, len(out.contacts)) == (202, 1)
    assert (
        twilio_request(url, content.replace(b"}", b', "Extra": "x"}'), sig, "application/json", connector).status == 401
    )
    assert (
        twilio_request(
            PUBLIC, content, twilio_signature(PUBLIC, [], SECRETS["twilio_auth_token"]), "application/json", connector
        ).status
        == 401
    )


def test_a_json_bodied_twilio_webhook_that_is_not_an_object_of_parameters_is_400():
    for content, field in ((b'["a"]', "<body>"), (b'{"MessageSid": "SM1", "Body": {"x": 1}}', "Body")):
        url = f"{PUBLIC}?bodySHA256={hashlib.sha256(content).hexdigest()}"
        out = twilio_request(url, content, twilio_signature(url, [], SECRETS["twilio_auth_token"]), "application/json")
        assert (out.status, out.error) == (400, "invalid_body") and out.fields[0]["field"] == field


# -- Meta ------------------------------------------------------------------------------------------
def test_meta_escaped_unicode_form_is_the_documented_one():
    # developers.facebook.com/docs/messenger-platform/webhooks#validate-payloads: "the string äöå
    # should be escaped to \u00e4\u00f6\u00e5" (lowercase hex)
    assert meta_escaped("äöå".encode()) == b"\\u00e4\\u00f6\\u00e5"
    assert meta_escaped("😀".encode()) == b"\\ud83d\\ude00"  # above the BMP: JSON's surrogate pair
    assert meta_escaped(b'{"a": "plain"}') is None


def test_meta_signature_over_the_escaped_body_validates_a_raw_utf8_body():
    secret = SECRETS["meta_app_secret"]
    content = body("meta", "meta_messenger.json").replace(b'"text": "', '"text": "äöå '.encode(), 1)
    assert "äöå".encode() in content
    escaped_sig = hub_signature_256(meta_escaped(content), secret)
    assert meta_signed(content, escaped_sig, secret) and meta_signed(
        content, hub_signature_256(content, secret), secret
    )
    out = handle(
        WebhookRequest(
            "meta", "u", {"content-type": "application/json", "x-hub-signature-256": escaped_sig}, content, NOW
        ),
        SECRETS,
        MapContext(received_at=NOW),
        1_000_000,
    )
    assert (out.status, len(out.contacts)) == (202, 1)
    assert not meta_signed(content.replace("äöå".encode(), "aoa".encode()), escaped_sig, secret)


def test_hub_signature_256_published_vector():
    # docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries ("Testing the webhook
    # payload validation"): the same X-Hub-Signature-256 scheme Meta uses, secret
    # "It's a Secret to Everybody", payload "Hello, World!"
    assert (
        hub_signature_256(b"Hello, World!", "It's a Secret to Everybody")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    assert meta_signed(
        b"Hello, World!",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "It's a Secret to Everybody",
    )


# -- Shopify ---------------------------------------------------------------------------------------
def test_shopify_published_vector():
    # Shopify/shopify-api-js, packages/shopify-api/lib/webhooks/__tests__/validate.test.ts
    # ("returns true for valid request"): apiSecretKey "test_secret_key", raw body '{"foo": "bar"}'
    assert shopify_hmac(b'{"foo": "bar"}', "test_secret_key") == "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
    order = body("shopify", "shopify_order.json")
    hdrs = {
        "content-type": "application/json",
        "x-shopify-topic": "orders/create",
        "x-shopify-hmac-sha256": shopify_hmac(order, "test_secret_key"),
    }
    out = handle(
        WebhookRequest("shopify", "u", hdrs, order, NOW),
        {**SECRETS, "shopify_webhook_secret": "test_secret_key"},
        MapContext(received_at=NOW),
        1_000_000,
    )
    assert (out.status, len(out.contacts)) == (202, 1)


# -- helpers ---------------------------------------------------------------------------------------
def _form(content: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(content.decode(), keep_blank_values=True)


def _fixture(name: str) -> str:
    from fixtures.providers import raw

    return raw(name).decode()


def _sign_counting_repeats(url: str, params, token: str) -> str:
    """The signature a validator that hashes every repeated pair again would expect."""
    import base64
    import hmac

    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
