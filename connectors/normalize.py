"""Normalization shared by every connector: pure functions, no I/O.

Phones to E.164 (``phonenumbers``, with a default region for numbers written without a country
code), emails trimmed and lowercased, social handles without ``@`` and lowercased with their
platform, provider timestamps (epoch seconds or milliseconds, RFC 2822, ISO 8601) to UTC,
the language of a text (the provider's when it states one, else lingua, offline, limited to the
configured languages, skipped for short texts and cached by text) and facts the
customer gave (order and account numbers; patterns configurable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

from connectors.contact import FactIn, IdentityIn
from pydantic import ValidationError

from connectors.errors import MalformedPayload, Unmappable
from schemas.identities import email_norm, handle_norm, phone_e164, phones_in_text  # noqa: F401 (ingest's names)


def identity(kind: str, value: str, **kw) -> IdentityIn:
    """An IdentityIn, or Unmappable saying which rule the value breaks (never the value itself:
    pydantic's own message quotes it)."""
    try:
        return IdentityIn(kind=kind, value=value, **kw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise Unmappable(f"{kind} identity: {problems}") from None


def email_identity(raw: str | None, **kw) -> IdentityIn | None:
    value = email_norm(raw) if isinstance(raw, str) else None
    return identity("email", value, **kw) if value else None


def phone_identity(raw: str | None, region: str, **kw) -> IdentityIn | None:
    value = phone_e164(raw, region) if isinstance(raw, str) else None
    return identity("phone", value, **kw) if value else None


def social_identity(handle: str | None, platform: str, **kw) -> IdentityIn | None:
    value = handle_norm(handle) if isinstance(handle, str) else None
    return identity("social", value, platform=platform, **kw) if value else None


def account_identity(account_id: str | int | None, platform: str, **kw) -> IdentityIn | None:
    value = str(account_id).strip() if isinstance(account_id, (str, int)) and account_id != "" else ""
    return identity("account", value, platform=platform, **kw) if value else None


def dedupe_identities(idents: list[IdentityIn | None]) -> list[IdentityIn]:
    """Drop Nones and repeats (same kind, platform and value); the first occurrence wins."""
    seen, out = set(), []
    for i in idents:
        if i is None:
            continue
        key = (i.kind, i.platform, i.value)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


# ------------------------------------------------------------------------------------ time


def parse_time(value: str | int | float | datetime | None, field_name: str = "timestamp") -> datetime:
    """A provider's timestamp as an aware UTC datetime.

    Accepts epoch seconds or milliseconds (number or digit string; > 10^11 means milliseconds),
    RFC 2822 (``Tue, 21 Nov 2026 10:00:00 +0000``, Twilio, email ``Date``), X's
    ``Wed Oct 10 20:19:24 +0000 2018`` and ISO 8601 with an offset, and a datetime a payload's
    model parsed already (not written out and read again). A time without a zone is rejected:
    guessing it would shift the SLA clock.
    """
    if isinstance(value, datetime):
        return _aware_utc(value, field_name)
    if value is None or value == "":
        raise MalformedPayload(field_name, "missing timestamp")
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\d{9,14}(\.\d+)?", value.strip())):
        num = float(value)
        if num > 1e11:
            num /= 1000.0
        try:
            return datetime.fromtimestamp(num, UTC)
        except (OverflowError, OSError, ValueError):
            raise Unmappable(f"{field_name}: timestamp out of range") from None
    text = str(value).strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        dt = None
    if dt is None:
        try:
            dt = datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")
        except ValueError:
            dt = None
    if dt is None:
        try:
            dt = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise MalformedPayload(field_name, f"not a timestamp: {text[:40]!r}") from None
    return _aware_utc(dt, field_name)


def _aware_utc(dt: datetime, field_name: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise MalformedPayload(field_name, "timestamp without a time zone")
    try:
        return dt.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Unmappable(f"{field_name}: timestamp out of range") from None


# ------------------------------------------------------------------------------- language
#
# Detection (lingua, ~100-150 µs for a one-line message) runs only where it can matter: not when
# the provider states the language, not on a text too short to tell, and once per text: results
# are kept in a bounded LRU keyed by what the detector reads (the first MAX_CHARS characters,
# digits blanked out: lingua reads letters only, so "ordine 100234" and "ordine 100235" are one
# question).

MIN_LETTERS, MIN_WORDS = 8, 2  # below either, a text is too short to tell
MAX_CHARS = 1000  # what detection reads of a longer text
CACHE_SIZE = 4096  # texts whose language is remembered (per language set)
_DIGITS = re.compile(r"\d+")
_TAG = re.compile(r"^([A-Za-z]{2})(?:[-_][A-Za-z0-9]{1,8})*$")

Detect = Callable[[str], "str | None"]


@lru_cache(maxsize=4)
def _detector(languages: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in languages]
    # Every model loaded here, once: left to lingua, each is loaded the first time a text needs it,
    # seconds of CPU spread over the first texts examined (a gateway's first requests).
    builder = LanguageDetectorBuilder.from_languages(*langs).with_minimum_relative_distance(0.05)
    return builder.with_preloaded_language_models().build()


def lingua_detect(languages: tuple[str, ...]) -> Detect:
    """lingua among ``languages``: ISO 639-1 code or None. Its models load on the first call."""

    def detect(text: str) -> str | None:
        found = _detector(languages).detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None

    return detect


def language_sample(text: str | None) -> str | None:
    """What detection reads of ``text``; None when the text is empty or too short to tell."""
    if not text:
        return None
    sample = _blanked(text)
    return sample if _tells(sample) else None


def _blanked(text: str) -> str:
    return _DIGITS.sub(" ", text[:MAX_CHARS]).strip()


def _tells(sample: str) -> bool:
    """Long enough to tell its language: MIN_LETTERS letters in at least MIN_WORDS words."""
    return (
        len(sample) >= MIN_LETTERS
        and sum(ch.isalpha() for ch in sample) >= MIN_LETTERS
        and len(sample.split(None, MIN_WORDS)) >= MIN_WORDS
    )


def stated_language(value: str | None) -> str | None:
    """A provider's language tag as ISO 639-1, lowercase: ``it``, ``it-IT``, ``pt_BR``, ``EN``,
    ``"nl, en"`` (Content-Language: the first) -> two letters; ``und``, ``zxx``, ``""`` -> None."""
    if not value or not isinstance(value, str):
        return None
    match = _TAG.match(value.split(",")[0].strip())
    return match.group(1).lower() if match else None


class LanguageDetector:
    """The language of a text among ``languages``, detected only where it can matter (see above).
    ``detect`` is the detector itself (lingua by default; tests give their own)."""

    def __init__(self, languages: tuple[str, ...], detect: Detect | None = None, cache_size: int = CACHE_SIZE):
        self.languages = tuple(languages)
        self.detect = detect if detect is not None else lingua_detect(self.languages)
        self._lingua = detect is None
        # keyed by the sample: a text seen before is neither examined nor detected again
        self._cached = lru_cache(maxsize=cache_size)(self._decide)

    def __call__(self, text: str | None, stated: str | None = None) -> str | None:
        lang = stated_language(stated)
        if lang:
            return lang
        return self._cached(_blanked(text)) if text else None

    def warm(self) -> None:
        """Load lingua's models now (the gateway's start-up) rather than in the first request."""
        if self._lingua:
            _detector(self.languages)

    def _decide(self, sample: str) -> str | None:
        return self.detect(sample) if _tells(sample) else None

    def cache_info(self):
        return self._cached.cache_info()


@lru_cache(maxsize=8)
def shared_detector(languages: tuple[str, ...]) -> LanguageDetector:
    """One detector (and one cache) per language set for the whole process."""
    return LanguageDetector(languages)


def detect_language(text: str | None, languages: tuple[str, ...] = ("en", "it", "pl", "nl", "tr")) -> str | None:
    """ISO 639-1 code of ``text`` among ``languages``; None for text too short to tell."""
    return shared_detector(tuple(languages))(text)


# ---------------------------------------------------------------------------------- facts

DEFAULT_FACT_PATTERNS: dict[str, str] = {
    # a keyword (any inflection), then within 25 characters without digits the number:
    # "order 4711", "numero dell'ordine è 100234", "bestelling 778899", "zamówienie nr 554433",
    # "Siparişim 445566", and Shopify-style "#100234"
    "order_number": r"(?:order|ordine|bestelling|bestelnummer|zam[óo]wieni|sipari[şs]|pedido|commande|bestellung)"
    r"\w*[^\d\n]{0,25}?#?(\d{4,12})(?![-/.:]\d)|(?<![\w#&])#(\d{4,12})\b",
    # "account 88001234", "klantnummer 55512345", "numer klienta 1234567", "conto 12345678"
    "account_number": r"(?:account|klantnummer|klant|customer\s+number|numer\s+klienta|conto|hesap|m[üu][şs]teri\s*no)"
    r"\w*[^\d\n]{0,20}?(\d{5,14})(?![-/.:]\d)",
}


@dataclass(frozen=True)
class FactPatterns:
    compiled: tuple[tuple[str, re.Pattern], ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, text: str | None) -> FactPatterns:
        """``text`` is JSON ``{"kind": "regex"}`` (each regex with capturing groups); None = defaults.
        Compiled once per distinct ``text`` (the gateway asks for every request)."""
        return _fact_patterns(text or None)


@lru_cache(maxsize=8)
def _fact_patterns(text: str | None) -> FactPatterns:
    patterns = DEFAULT_FACT_PATTERNS if not text else json.loads(text)
    return FactPatterns(tuple((kind, re.compile(rx, re.IGNORECASE)) for kind, rx in patterns.items()))


def extract_facts(text: str | None, patterns: FactPatterns, source: str = "text") -> list[FactIn]:
    """Every fact in ``text``: the first non-empty group of each match, once per kind and value."""
    if not text:
        return []
    out, seen = [], set()
    for kind, rx in patterns.compiled:
        for m in rx.finditer(text):
            value = next((g for g in m.groups() if g), None) if m.groups() else m.group(0)
            if value and (kind, value) not in seen:
                seen.add((kind, value))
                out.append(FactIn(kind=kind, value=value, source=source))
    return out
