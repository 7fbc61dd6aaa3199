"""What every connector is made of, as plain data and pure functions.

A ``Connector`` names its provider's media types, the setting that holds its signing secret,
a ``verify`` function (request + secret -> bool) and a ``parse`` function (request + context ->
contacts and rejected parts). ``parse`` raises ``MalformedPayload`` for a body that is not the
provider's shape; a part of a well-formed body that cannot be mapped (an unknown event type)
comes back as ``Rejected`` and goes to ingest.dlq.v1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from connectors.contact import ContactIn
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import FactPatterns, LanguageDetector, extract_facts, shared_detector
from threadline.http import BadJson, load_json
from threadline.settings import Settings


@dataclass(frozen=True)
class WebhookRequest:
    connector: str
    url: str  # the full URL the provider called (Twilio signs it)
    headers: Mapping[str, str]  # lowercase names
    body: bytes
    received_at: datetime
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class MapContext:
    """Everything a mapping needs besides the payload: no I/O behind any of it."""

    region: str = "IT"
    languages: tuple[str, ...] = ("en", "it", "pl", "nl", "tr")
    facts: FactPatterns = field(default_factory=lambda: FactPatterns.from_json(None))
    received_at: datetime | None = None
    cdr_timezone: str = "UTC"
    detector: LanguageDetector | None = None  # None = the process's shared one for ``languages``

    @classmethod
    def from_settings(cls, settings: Settings, received_at: datetime | None = None) -> MapContext:
        return cls(
            region=settings.connectors.default_phone_region.upper(),
            languages=tuple(c.strip().lower() for c in settings.connectors.languages.split(",") if c.strip()),
            facts=FactPatterns.from_json(settings.connectors.fact_patterns),
            received_at=received_at,
            cdr_timezone=settings.connectors.cdr_timezone,
        )

    def at(self, received_at: datetime) -> MapContext:
        """This context for a request received at ``received_at``: ``dataclasses.replace``'s
        result, without its walk over the fields (the gateway asks for every request)."""
        ctx = object.__new__(MapContext)
        ctx.__dict__.update(self.__dict__, received_at=received_at)
        return ctx

    def language(self, text: str | None, stated: str | None = None) -> str | None:
        """The provider's stated language, else the detected one (None for a short text)."""
        return self.language_detector()(text, stated)

    def language_detector(self) -> LanguageDetector:
        return self.detector or shared_detector(self.languages)


@dataclass(frozen=True)
class Rejected:
    """A part of a request (or a record of a file) that could not be mapped."""

    reason: str
    raw: bytes
    where: str | None = None  # "line 12", "entry.0.messaging.1" ...


Mapped = list[ContactIn | Rejected]


@dataclass(frozen=True)
class Connector:
    name: str
    media_types: tuple[str, ...]
    secret: str | None  # settings field of the signing secret
    verify: Callable[[WebhookRequest, str], bool]
    parse: Callable[[WebhookRequest, MapContext], Mapped]
    doc: str = ""


def build_contact(data: dict[str, Any], ctx: MapContext) -> ContactIn:
    """A ContactIn from a connector's mapping: the language the provider stated (the mapping's
    ``language``, normalized to ISO 639-1) or else detected, and facts extracted from the text. An invalid result (no usable identity, say) is
    ``Unmappable``: the payload was well-formed, we cannot make a contact of it."""
    text = data.get("text")
    if text or data.get("language"):
        data["language"] = ctx.language(text, data.get("language"))
    if text:
        have = {
            (f["kind"] if isinstance(f, dict) else f.kind, f["value"] if isinstance(f, dict) else f.value)
            for f in data.get("facts", [])
        }
        extra = [f for f in extract_facts(text, ctx.facts) if (f.kind, f.value) not in have]
        data["facts"] = list(data.get("facts", [])) + extra
    if not data.get("identities"):
        raise Unmappable("no identity of the customer in the payload")
    try:
        return ContactIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<contact>"
        raise Unmappable(f"cannot map to a contact: {where}: {first['msg']}") from exc


def map_each(
    items: list[Any], fn: Callable[[Any], ContactIn | None], raw_of: Callable[[Any], bytes], where: Callable[[int], str]
) -> Mapped:
    """Map every item; an Unmappable item becomes a Rejected part, the others go on."""
    out: Mapped = []
    for i, item in enumerate(items):
        try:
            contact = fn(item)
        except Unmappable as exc:
            out.append(Rejected(exc.reason, raw_of(item), where(i)))
            continue
        if contact is not None:
            out.append(contact)
    return out


def json_body(req: WebhookRequest) -> Any:
    """The parsed body; MalformedPayload when it is not JSON, nested too deep or holds a lone
    surrogate (``threadline.http.load_json``)."""
    try:
        return load_json(req.body)
    except BadJson as exc:
        raise MalformedPayload(exc.field, exc.problem) from None


def form_body(req: WebhookRequest) -> list[tuple[str, str]]:
    try:
        text = req.body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("<body>", "form body is not UTF-8") from None
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise MalformedPayload("<body>", f"not application/x-www-form-urlencoded: {exc}") from None


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def require(obj: Any, path: str, kind: type | tuple[type, ...] = str) -> Any:
    """``obj[a][b]...`` for ``path`` "a.b", of type ``kind``; MalformedPayload naming the path otherwise."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise MalformedPayload(path, "missing")
    if not isinstance(cur, kind) or (isinstance(cur, str) and not cur.strip()):
        raise MalformedPayload(path, f"expected {getattr(kind, '__name__', kind)}")
    return cur
