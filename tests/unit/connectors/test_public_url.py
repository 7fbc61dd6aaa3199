"""The URL a signature is checked against behind a proxy: the connector's configured public URL,
or X-Forwarded-* from a trusted proxy only (connectors.public_url, the gateway's _public_url)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from connectors.base import MapContext, WebhookRequest
from connectors.gateway import _public_url
from connectors.public_url import PublicUrls, public_url
from connectors.webhooks import handle
from fixtures.providers import SECRETS, body, headers
from threadline.errors import ConfigError
from threadline.settings import Settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PUBLIC = "https://hooks.example.org/twilio/sms"  # what Twilio was given
GATEWAY = ("10.0.3.7", 8000)  # where the proxy forwards it: /webhooks/twilio
PROXY, CLIENT = "10.0.9.2", "203.0.113.9"


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def incoming(
    path: str = "/webhooks/twilio",
    *,
    peer: str = PROXY,
    query: str = "",
    extra: dict[str, str] | list[tuple[str, str]] | None = None,
) -> Request:
    """A request as the gateway's ASGI server hands it over: the direct peer in ``client``."""
    more = list(extra.items()) if isinstance(extra, dict) else list(extra or [])
    hdrs = [("host", f"{GATEWAY[0]}:{GATEWAY[1]}"), *more]
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": "http",
            "server": GATEWAY,
            "root_path": "",
            "path": path,
            "query_string": query.encode(),
            "client": (peer, 50123),
            "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs],
        }
    )


def status(req: Request, s: Settings, connector: str = "twilio", signed_for: str = PUBLIC) -> int:
    """The gateway's answer to a Twilio webhook signed for ``signed_for`` arriving as ``req``."""
    fixture = "twilio_sms.json" if connector == "twilio" else "twilio_voice_status.json"
    content = body(connector, fixture)
    url = _public_url(req, s, connector)
    wr = WebhookRequest(connector, url, headers(connector, content, signed_for), content, NOW)
    return handle(wr, SECRETS, MapContext(received_at=NOW), 1_000_000).status


def test_a_signature_over_the_configured_public_url_validates():
    assert status(incoming(), settings(twilio_public_url=PUBLIC)) == 202


@pytest.mark.parametrize(
    "configured",
    [
        None,  # the URL as received: http://10.0.3.7:8000/webhooks/twilio
        "https://hooks.example.org/twilio/voice",  # another path
        "http://hooks.example.org/twilio/sms",  # another scheme
        "https://other.example.org/twilio/sms",  # another host
        "https://hooks.example.org/twilio/sms/",  # a trailing slash is another URL to Twilio
    ],
)
def test_a_signature_over_the_public_url_fails_against_any_other(configured):
    assert status(incoming(), settings(twilio_public_url=configured)) == 401


def test_the_public_url_of_one_connector_is_not_used_for_another():
    s = settings(twilio_public_url=PUBLIC)
    assert status(incoming("/webhooks/twilio-voice"), s, "twilio-voice") == 401
    voice = "https://hooks.example.org/twilio/voice"
    s = settings(twilio_public_url=PUBLIC, twilio_voice_public_url=voice)
    assert status(incoming("/webhooks/twilio-voice"), s, "twilio-voice", signed_for=voice) == 202


def test_the_query_of_the_request_is_part_of_the_signed_url():
    s = settings(twilio_public_url=PUBLIC)
    assert _public_url(incoming(query="tenant=a&x=1"), s, "twilio") == PUBLIC + "?tenant=a&x=1"
    assert status(incoming(query="tenant=a"), s, signed_for=PUBLIC + "?tenant=a") == 202
    assert status(incoming(query="tenant=b"), s, signed_for=PUBLIC + "?tenant=a") == 401


FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "hooks.example.org", "x-forwarded-prefix": "/threadline"}


def test_a_trusted_proxy_says_the_scheme_host_and_prefix():
    s = settings(trusted_proxies="10.0.9.0/24, 192.0.2.1")
    req = incoming(extra=FORWARDED)
    assert _public_url(req, s, "twilio") == "https://hooks.example.org/threadline/webhooks/twilio"
    assert status(req, s, signed_for="https://hooks.example.org/threadline/webhooks/twilio") == 202


def test_trusted_proxy_mode_ignores_x_forwarded_from_a_peer_not_in_the_list():
    s = settings(trusted_proxies="10.0.9.0/24")
    req = incoming(peer=CLIENT, extra=FORWARDED)
    assert _public_url(req, s, "twilio") == "http://10.0.3.7:8000/webhooks/twilio"
    assert status(req, s, signed_for="https://hooks.example.org/threadline/webhooks/twilio") == 401


def test_without_trusted_proxies_x_forwarded_is_ignored_even_from_loopback():
    req = incoming(peer="127.0.0.1", extra=FORWARDED)
    assert _public_url(req, settings(), "twilio") == "http://10.0.3.7:8000/webhooks/twilio"


def test_of_a_comma_list_the_value_the_nearest_proxy_appended_counts():
    cfg = PublicUrls.from_settings(settings(trusted_proxies=PROXY))
    hdrs = {"x-forwarded-host": "attacker.example, hooks.example.org", "x-forwarded-proto": "http, https"}
    assert (
        public_url(cfg, "twilio", url="http://10.0.3.7:8000/webhooks/twilio", peer=PROXY, headers=hdrs)
        == "https://hooks.example.org/webhooks/twilio"
    )


def test_of_a_repeated_header_the_last_one_counts():
    s = settings(trusted_proxies=PROXY)
    req = incoming(
        extra=[
            ("X-Forwarded-Host", "attacker.example"),
            ("X-Forwarded-Host", "hooks.example.org"),
            ("X-Forwarded-Proto", "https"),
        ]
    )
    assert _public_url(req, s, "twilio") == "https://hooks.example.org/webhooks/twilio"


def test_a_malformed_forwarded_value_is_ignored_not_trusted():
    cfg = PublicUrls.from_settings(settings(trusted_proxies=PROXY))
    hdrs = {
        "x-forwarded-host": "hooks.example.org/evil?x=",
        "x-forwarded-proto": "gopher",
        "x-forwarded-prefix": "/a b",
    }
    assert (
        public_url(cfg, "twilio", url="http://10.0.3.7:8000/webhooks/twilio", peer=PROXY, headers=hdrs)
        == "http://10.0.3.7:8000/webhooks/twilio"
    )


def test_the_connector_public_url_wins_over_forwarded_headers_and_the_base_url():
    s = settings(twilio_public_url=PUBLIC, trusted_proxies=PROXY, public_base_url="https://gw.example.org")
    assert _public_url(incoming(extra=FORWARDED), s, "twilio") == PUBLIC
    assert (
        _public_url(incoming("/webhooks/twilio-voice"), s, "twilio-voice")
        == "https://gw.example.org/webhooks/twilio-voice"
    )


def test_an_ipv4_peer_written_as_ipv6_mapped_is_trusted():
    cfg = PublicUrls.from_settings(settings(trusted_proxies="10.0.9.0/24"))
    assert cfg.trusts("::ffff:10.0.9.2") and cfg.trusts(PROXY)
    assert not cfg.trusts(CLIENT) and not cfg.trusts("testclient") and not cfg.trusts(None)


@pytest.mark.parametrize(
    "name,value,problem",
    [
        ("twilio_public_url", "/twilio/sms", "absolute http(s) URL"),
        ("twilio_public_url", "ftp://hooks.example.org/twilio", "absolute http(s) URL"),
        ("twilio_voice_public_url", "https://hooks.example.org/voice#x", "fragment"),
        ("trusted_proxies", "10.0.0.1, proxy.internal", "'proxy.internal' is not an IP address"),
    ],
)
def test_a_bad_setting_is_refused_at_start_naming_it(name, value, problem):
    with pytest.raises(ConfigError) as exc:
        settings(**{name: value})
    assert name in str(exc.value) and problem in str(exc.value)


def test_the_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("THREADLINE_TWILIO_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("THREADLINE_TWILIO_VOICE_PUBLIC_URL", "https://hooks.example.org/twilio/voice?ignored=1")
    monkeypatch.setenv("THREADLINE_TRUSTED_PROXIES", "10.0.9.2,fd00::/8")
    s = Settings()
    assert (s.connectors.twilio_public_url, s.connectors.twilio_voice_public_url) == (
        PUBLIC,
        "https://hooks.example.org/twilio/voice",
    )
    assert PublicUrls.from_settings(s).trusts("fd00::1")


def test_the_url_is_worked_out_once_for_the_same_request_line_host_and_forwarded_headers(monkeypatch):
    from connectors import intake

    calls: list[str] = []
    real = intake.public_url

    def counting(*args, **kw):
        calls.append(kw["url"])
        return real(*args, **kw)

    monkeypatch.setattr(intake, "public_url", counting)
    s = settings(trusted_proxies=PROXY, public_base_url="https://gw.example.org")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.org"}
    first = [_public_url(incoming("/webhooks/twilio", query="a=1"), s, "twilio") for _ in range(3)]
    assert first == ["https://gw.example.org/webhooks/twilio?a=1"] * 3 and len(calls) == 1
    # what the URL depends on is part of what is remembered: the path, the query, the forwarded
    # headers and (with those headers) whether the peer is a trusted proxy
    assert _public_url(incoming("/webhooks/twilio", query="a=2"), s, "twilio").endswith("?a=2")
    assert _public_url(incoming(extra=forwarded), s, "twilio") == "https://hooks.example.org/webhooks/twilio"
    assert _public_url(incoming(extra=forwarded, peer=CLIENT), s, "twilio") == "https://gw.example.org/webhooks/twilio"
    assert _public_url(incoming("/webhooks/twilio-voice"), s, "twilio-voice").endswith("/webhooks/twilio-voice")
    assert len(calls) == 5
