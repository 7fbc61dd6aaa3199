"""The providers' webhook signatures, as pure functions (used to verify and, by the traffic
generator and the tests, to sign).

* Twilio ``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, full URL + every POST parameter
  sorted by name, as name + value with no separator)).
* Meta ``X-Hub-Signature-256``: ``sha256=`` + hex(HMAC-SHA256(app secret, raw body)).
* X ``X-Twitter-Webhooks-Signature``: ``sha256=`` + base64(HMAC-SHA256(consumer secret, raw
  body)); the CRC challenge answers ``sha256=`` + base64(HMAC-SHA256(consumer secret, crc_token)).
* Shopify ``X-Shopify-Hmac-Sha256``: base64(HMAC-SHA256(webhook secret, raw body)).
* Threadline's generic webhooks ``X-Threadline-Signature``: ``sha256=`` + hex(HMAC-SHA256(secret, raw body)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def twilio_signature(url: str, params: Iterable[tuple[str, str]], token: str) -> str:
    data = url + "".join(k + v for k, v in sorted(params, key=lambda kv: (kv[0], kv[1])))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def hub_signature_256(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def x_signature(body: bytes, secret: str) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def x_crc_response(crc_token: str, secret: str) -> str:
    return x_signature(crc_token.encode(), secret)


def shopify_hmac(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def threadline_signature(body: bytes, secret: str) -> str:
    return hub_signature_256(body, secret)


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing signature never matches."""
    return bool(given) and hmac.compare_digest(given.strip().encode(), expected.encode())


MEDIA_TYPES = {"twilio": "application/x-www-form-urlencoded", "twilio-voice": "application/x-www-form-urlencoded",
               "email": "message/rfc822"}


def signed_headers(connector: str, body: bytes, url: str, secret: str) -> dict[str, str]:
    """The headers a provider sends with ``body`` to ``url``: media type and signature.
    For the traffic generator and the tests; the gateway only ever verifies."""
    from urllib.parse import parse_qsl

    headers = {"content-type": MEDIA_TYPES.get(connector, "application/json")}
    if connector in ("twilio", "twilio-voice"):
        headers["x-twilio-signature"] = twilio_signature(url, parse_qsl(body.decode(), keep_blank_values=True), secret)
    elif connector == "meta":
        headers["x-hub-signature-256"] = hub_signature_256(body, secret)
    elif connector == "x":
        headers["x-twitter-webhooks-signature"] = x_signature(body, secret)
    elif connector == "shopify":
        headers["x-shopify-hmac-sha256"] = shopify_hmac(body, secret)
        headers["x-shopify-topic"] = "orders/create"
    else:
        headers["x-threadline-signature"] = threadline_signature(body, secret)
    return headers
