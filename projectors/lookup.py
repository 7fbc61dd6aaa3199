"""Identity lookups (``GET /customers/by-identity``): what a caller holds, normalised exactly as
ingest normalised what is stored. Pure functions, no I/O; the SQL is at the end.

* email: trimmed and lowercased (``mailto:`` and ``Name <addr>`` accepted); matched case-insensitively;
* phone: to E.164 with the default region (``THREADLINE_DEFAULT_PHONE_REGION``), any spacing,
  ``00`` or ``+``, the provider's raw form (``whatsapp:+31…``, ``tel:``, ``sip:``, ``sms:``); a
  ``+`` sent unencoded in a query string arrives as a space and is read as the ``+`` it was;
* social: the handle with or without ``@``, lowercased, or a profile URL (``https://x.com/giulia_r``
  gives platform twitter); ``platform`` optional (``x`` is ``twitter``);
* account, cookie, device, chat_visitor, other: trimmed, exact.

The normalisers are the event contract's (``schemas.identities``, which ingest uses too), imported here
and nowhere else in the read API: they are the one definition of what a stored identity looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

from schemas.identities import email_norm, handle_norm, phone_e164

CASE_INSENSITIVE = frozenset({"email", "social"})
PLATFORM_KINDS = frozenset({"social", "account"})  # kinds stored with a platform
PLATFORM_ALIASES = {
    "x": "twitter",
    "twitter.com": "twitter",
    "x.com": "twitter",
    "instagram.com": "instagram",
    "facebook.com": "facebook",
    "fb.com": "facebook",
}
_PHONE_SCHEME = re.compile(r"^\s*(whatsapp|tel|sip|sms)\s*:", re.IGNORECASE)
_LOST_PLUS = re.compile(r"^((?:whatsapp|tel|sip|sms)\s*:)?\s+(?=\d)", re.IGNORECASE)


class BadIdentity(ValueError):
    """The value cannot be an identity of that kind: a 400 naming ``field``."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Lookup:
    kind: str
    value: str  # the normalised value, as stored
    platform: str | None  # None: any platform

    def describe(self) -> str:
        return f"{self.kind} identity {self.value}" + (f" on {self.platform}" if self.platform else "")


def platform_norm(platform: str | None) -> str | None:
    if platform is None or not platform.strip():
        return None
    p = platform.strip().lower()
    return PLATFORM_ALIASES.get(p, p)


def phone_lookup(value: str, region: str) -> str | None:
    """E.164 of a phone as a caller may send it, the lost ``+`` first, then as written."""
    restored = _LOST_PLUS.sub(lambda m: (m.group(1) or "").replace(" ", "") + "+", value, count=1)
    for form in dict.fromkeys((restored, value)):
        text = form.strip()
        scheme = _PHONE_SCHEME.match(text)
        if scheme and scheme.group(1).lower() == "sms":
            text = text[scheme.end() :]
        elif scheme:
            text = scheme.group(1).lower() + ":" + text[scheme.end() :].strip()
        found = phone_e164(text, region)
        if found:
            return found
    return None


def _social(value: str, platform: str | None) -> tuple[str | None, str | None]:
    text = value.strip()
    if "/" in text:
        try:
            url = urlsplit(text if "://" in text else "https://" + text)
            host = (url.hostname or "").removeprefix("www.").removeprefix("mobile.")
        except ValueError:  # "http://[x": not a URL, so not a profile's
            raise BadIdentity("value", "not a social handle or profile URL") from None
        parts = [p for p in url.path.split("/") if p]
        if host in PLATFORM_ALIASES and parts:
            return handle_norm(parts[0]), platform or PLATFORM_ALIASES[host]
    if ":" in text:  # "twitter:@giulia_r"
        prefix, _, rest = text.partition(":")
        if prefix.strip().lower() in PLATFORM_ALIASES or prefix.strip().lower() in ("twitter", "instagram", "facebook"):
            return handle_norm(rest), platform or platform_norm(prefix)
    return handle_norm(text), platform


def normalise(kind: str, value: str, platform: str | None, region: str) -> Lookup:
    """The identity to look up, or BadIdentity naming the parameter that cannot be one."""
    platform = platform_norm(platform)
    if kind == "email":
        text = value.strip()
        if text.lower().startswith("mailto:"):
            text = text[len("mailto:") :].split("?")[0]
        found = email_norm(parseaddr(text)[1] or text)
        if not found:
            raise BadIdentity("value", "not an email address")
        return Lookup(kind, found, None)
    if kind == "phone":
        found = phone_lookup(value, region)
        if not found:
            raise BadIdentity("value", f"not a phone number (read with the default region {region})")
        return Lookup(kind, found, None)
    if kind == "social":
        handle, platform = _social(value, platform)
        if not handle:
            raise BadIdentity("value", "not a social handle")
        return Lookup(kind, handle, platform_norm(platform))
    text = value.strip()
    if not text:
        raise BadIdentity("value", "empty")
    return Lookup(kind, text, platform if kind in PLATFORM_KINDS else None)


def lookup_sql(schema: str, look: Lookup) -> tuple[str, list]:
    """Customers holding the identity, most recently seen first, with the stored identity that
    matched (one row per customer and stored form)."""
    where, params = "i.kind = %s and lower(i.value) = %s", [look.kind, look.value.lower()]
    if look.kind not in CASE_INSENSITIVE:
        where += " and i.value = %s"
        params.append(look.value)
    if look.platform is not None:
        where += " and i.platform = %s"
        params.append(look.platform)
    return (
        f"select m.customer_id, i.kind, nullif(i.platform, '') as platform, i.value,"
        f" max(i.last_seen_at) as seen"
        f" from {schema}.customer_identities i join {schema}.customers m using (origin_customer_id)"
        f" where {where} group by m.customer_id, i.kind, i.platform, i.value"
        f" order by seen desc, m.customer_id, i.platform, i.value",
        params,
    )
