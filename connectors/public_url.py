"""The URL a provider was given, rebuilt from the request the gateway received (pure, no I/O).

Twilio signs the full URL it was configured with. Behind a load balancer or a path-rewriting
proxy the gateway sees another one (``http://10.0.3.7:8000/webhooks/twilio`` for
``https://hooks.example.org/twilio/sms``), so it rebuilds the public one, first rule that applies:

1. the connector's own public URL (``THREADLINE_TWILIO_PUBLIC_URL``,
   ``THREADLINE_TWILIO_VOICE_PUBLIC_URL``): that URL, with the query string of the request;
2. trusted-proxy mode (``THREADLINE_TRUSTED_PROXIES``): when the direct peer is one of the
   configured proxy addresses, ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
   ``X-Forwarded-Prefix`` replace the scheme, the host and prepend to the path. From any other
   peer these headers are ignored: a client cannot choose the URL we check a signature against;
3. ``THREADLINE_PUBLIC_BASE_URL`` + the request's path and query;
4. the URL as the gateway received it.

Of a header repeated or written as a comma list, the last value counts: the one the proxy next
to the gateway set or appended, not one a client sent ahead of it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from threadline.settings import Network, parse_proxies, valid_host

# The connectors whose provider signs the URL, and the setting that holds each one's public URL.
PUBLIC_URL_SETTINGS: dict[str, str] = {"twilio": "twilio_public_url", "twilio-voice": "twilio_voice_public_url"}

FORWARDED_HEADERS = ("x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix")
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*$")


@dataclass(frozen=True, eq=False)  # hashed by identity: the gateway remembers URLs per configuration
class PublicUrls:
    per_connector: Mapping[str, str] = field(default_factory=dict)  # connector -> URL given to the provider
    base_url: str | None = None  # THREADLINE_PUBLIC_BASE_URL
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings) -> PublicUrls:
        per = {
            name: getattr(settings.connectors, key)
            for name, key in PUBLIC_URL_SETTINGS.items()
            if getattr(settings.connectors, key, None)
        }
        return _cached(
            tuple(sorted(per.items())), settings.connectors.public_base_url, settings.connectors.trusted_proxies or ""
        )

    def trusts(self, peer: str | None) -> bool:
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer.strip("[]"))
        except ValueError:
            return False  # a unix socket, a test client's name
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.trusted_proxies)


@lru_cache(maxsize=8)
def _cached(per: tuple[tuple[str, str], ...], base_url: str | None, proxies: str) -> PublicUrls:
    return PublicUrls(dict(per), base_url.rstrip("/") if base_url else None, parse_proxies(proxies))


def _last(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    last = value.split(",")[-1].strip()
    return last or None


def public_url(config: PublicUrls, connector: str, *, url: str, peer: str | None, headers: Mapping[str, str]) -> str:
    """The URL ``connector``'s provider called, for the request the gateway received at ``url``
    from ``peer`` with ``headers`` (lowercase names; a repeated header's values joined with
    ", "). See the module's docstring for the rules."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    configured = config.per_connector.get(connector)
    if configured:
        return configured + query
    if config.trusts(peer):
        proto, host, prefix = (_last(headers, h) for h in FORWARDED_HEADERS)
        if proto or host or prefix:
            scheme = proto.lower() if proto and proto.lower() in ("http", "https") else parts.scheme
            netloc = host if host and valid_host(host) else parts.netloc
            pre = ""
            if prefix and _PREFIX.match("/" + prefix.strip("/")):
                pre = ("/" + prefix.strip("/")) if prefix.strip("/") else ""
            return f"{scheme}://{netloc}{pre}{parts.path}{query}"
    if config.base_url:
        return config.base_url + parts.path + query
    return url
