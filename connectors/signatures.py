"""The providers' webhook signatures, as pure functions (used to verify and, by the traffic
generator and the tests, to sign).

* Twilio ``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, full URL + the POST parameters:
  each name once, in sorted order, followed by each of its distinct values, sorted, as name +
  value with no separator)). A JSON body is not a parameter: Twilio puts its hex SHA-256 in the
  URL's ``bodySHA256`` query parameter and signs the URL alone. Twilio's helper libraries accept
  the signature over the URL without its port and with it (the scheme's default added when none
  is written): ``twilio_url_variants``.
* Meta ``X-Hub-Signature-256``: ``sha256=`` + hex(HMAC-SHA256(app secret, body)), where Meta's
  documentation says the body is taken in its escaped-unicode form (``äöå`` as
  ``\\u00e4\\u00f6\\u00e5``, lowercase hex): ``meta_signed`` accepts the signature over the raw
  body or over that form of it (``meta_escaped``).
* X ``X-Twitter-Webhooks-Signature``: ``sha256=`` + base64(HMAC-SHA256(consumer secret, raw
  body)); the CRC challenge answers ``sha256=`` + base64(HMAC-SHA256(consumer secret, crc_token)).
* Shopify ``X-Shopify-Hmac-Sha256``: base64(HMAC-SHA256(webhook secret, raw body)).
* Threadline's generic webhooks ``X-Threadline-Signature``: ``sha256=`` + hex(HMAC-SHA256(secret, raw body)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit


def twilio_signature(url: str, params: Iterable[tuple[str, str]], token: str) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


DEFAULT_PORTS = {"http": "80", "https": "443"}


def twilio_url_variants(url: str) -> tuple[str, ...]:
    """``url`` as written, without its port and with it (the scheme's default when none is
    written): ``https://a.example/x`` -> (``https://a.example/x``, ``https://a.example:443/x``)."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or not parts.netloc:
        return (url,)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or (host.startswith("[") and not host.endswith("]")):
        host, port = hostport, ""  # no port written ("[::1]" ends in a bracket, not digits)
    prefix = userinfo + at
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port or default}"))
    return tuple(dict.fromkeys((url, without, with_port)))  # the URL as written first, once


def twilio_body_sha256(body: bytes) -> str:
    """The hex SHA-256 Twilio puts in ``bodySHA256`` for a JSON body."""
    return hashlib.sha256(body).hexdigest()


def twilio_valid(url: str, params: Iterable[tuple[str, str]], signature: str | None, token: str) -> bool:
    """``signature`` is Twilio's over ``url`` (with or without its port) and ``params``."""
    if not signature:
        return False
    pairs = list(params)
    return any(same(signature, twilio_signature(u, pairs, token)) for u in twilio_url_variants(url))


def twilio_json_valid(url: str, body: bytes, signature: str | None, token: str) -> bool:
    """A JSON-bodied Twilio webhook: the body's SHA-256 equals ``bodySHA256`` of the URL's query,
    and the signature is over the URL alone (which carries that hash)."""
    given = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "bodySHA256"]
    if len(given) != 1 or not same(given[0].lower(), twilio_body_sha256(body)):
        return False
    return twilio_valid(url, (), signature, token)


def hub_signature_256(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match) -> str:
    code = ord(match.group(0))
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # above the BMP: a UTF-16 surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def meta_escaped(body: bytes) -> bytes | None:
    """The body with every non-ASCII character as ``\\uXXXX`` (lowercase hex); None when the body
    is ASCII already or not UTF-8 (then there is no other form to check)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isascii():
        return None
    return _NON_ASCII.sub(_escape, text).encode("ascii")


def meta_signed(body: bytes, signature: str | None, secret: str) -> bool:
    """``signature`` is Meta's ``X-Hub-Signature-256`` over the raw body or its escaped form."""
    if not signature:
        return False
    if same(signature, hub_signature_256(body, secret)):
        return True
    escaped = meta_escaped(body)
    return escaped is not None and same(signature, hub_signature_256(escaped, secret))


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


MEDIA_TYPES = {
    "twilio": "application/x-www-form-urlencoded",
    "twilio-voice": "application/x-www-form-urlencoded",
    "email": "message/rfc822",
}


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
