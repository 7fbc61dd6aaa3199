"""The contact envelope as Python: deterministic ids and the record written to contacts.v1.

Pure functions, no I/O: every connector maps its provider's payload to ``ContactIn`` and
``to_record`` turns that into the Avro record of schemas/avro/contact.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from threadline.ids import uuid5_str

# Namespace of every Threadline event id: uuid5(THREADLINE_NS, "<connector>:<provider id>").
THREADLINE_NS = uuid.UUID("5b0f3c9e-6f1a-5d8e-9c4b-7a1e2d3f4b5c")

Channel = Literal[
    "email",
    "sms",
    "whatsapp",
    "chat",
    "voice",
    "ivr",
    "twitter",
    "facebook",
    "instagram",
    "review",
    "web_form",
    "store",
    "other",
]
IdentityKind = Literal["email", "phone", "social", "account", "cookie", "device", "chat_visitor", "other"]


MIN_YEAR, MAX_YEAR = 1900, 2999  # of an event time: what lies outside is a mistake, or an attack


@lru_cache(maxsize=1024)
def event_id(connector: str, provider_id: str) -> str:
    """Deterministic: the same provider message through the same connector, the same id.
    Remembered for the last contacts: the record, its headers and the gateway's answer ask for it.

    ``str(uuid.uuid5(THREADLINE_NS, "<connector>:<provider id>"))``, written out by
    ``threadline.ids.uuid5_str`` without the UUID objects ``uuid5`` builds."""
    return uuid5_str(THREADLINE_NS, f"{connector}:{provider_id}")


def _fresh(factory: Callable[[], Any]) -> Any:
    """A mutable default built anew by ``factory`` for each model that leaves the field out, and
    documented (JSON Schema, OpenAPI) as that value, as a plain ``= []`` default is. pydantic
    deep-copies an unhashable default on every validation that uses it (``copy.deepcopy``: about
    a fifth of a chat contact's validation time, three copies per contact)."""
    empty = factory()
    documented = empty.model_dump(mode="json") if isinstance(empty, BaseModel) else empty
    return Field(default_factory=factory, json_schema_extra={"default": documented})


def _integral(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


class IdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    platform: str | None = None
    strength: Literal["asserted", "verified", "hint"] = "asserted"
    primary: bool = False


class ActorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["customer", "agent", "bot", "system"] = "customer"
    department: Literal["support", "sales", "marketing", "other"] | None = None
    id: str | None = None
    display_name: str | None = None


class FactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1)
    value: str = Field(min_length=1)
    source: str | None = None


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(min_length=1)
    channel: str | None = None
    granted: bool
    source: str | None = None


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    content_type: str | None = None
    # 1.0 is an integer to JSON Schema (and to the OpenAPI document) though not to strict pydantic
    size_bytes: Annotated[int, Field(ge=0), BeforeValidator(_integral)] | None = None
    url: str | None = None
    sha256: str | None = None


class ThreadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = _fresh(list)
    reply_to_id: str | None = None
    call_id: str | None = None
    session_id: str | None = None


class ContactIn(BaseModel):
    """A contact in Threadline's own JSON shape (the generic ingest endpoint's body)."""

    model_config = ConfigDict(extra="forbid")
    provider_id: str = Field(min_length=1, max_length=512)
    connector: str = Field(default="api", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    channel: Channel
    direction: Literal["inbound", "outbound", "internal"] = "inbound"
    occurred_at: datetime = Field(
        json_schema_extra={"pattern": r"^(19|2[0-9])[0-9]{2}-"},
        description="with a time zone; a year from 1900 to 2999",
    )
    actor: ActorIn = _fresh(ActorIn)
    identities: list[IdentityIn] = Field(min_length=1)
    subject: str | None = None
    text: str | None = None
    language: str | None = None
    attachments: list[AttachmentIn] = _fresh(list)
    thread: ThreadIn = _fresh(ThreadIn)
    facts: list[FactIn] = _fresh(list)
    consent: list[ConsentIn] = _fresh(list)
    metadata: dict[str, str] = _fresh(dict)
    event_type: str = "contact.received"

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at needs a time zone (e.g. 2026-11-22T10:00:00Z)")
        try:
            utc = v.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError(f"occurred_at out of range (years {MIN_YEAR} to {MAX_YEAR})") from None
        if not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise ValueError(f"occurred_at out of range (years {MIN_YEAR} to {MAX_YEAR})")
        return utc


def primary_identity(contact: ContactIn) -> IdentityIn:
    return next((i for i in contact.identities if i.primary), contact.identities[0])


def partition_key(contact: ContactIn) -> bytes:
    """contacts.v1 is keyed by the contact's primary channel identity."""
    ident = primary_identity(contact)
    platform = f"{ident.platform}:" if ident.platform else ""
    return f"{ident.kind}:{platform}{ident.value}".encode()


def to_record(contact: ContactIn, recorded_at: datetime) -> dict:
    """The Avro record (schemas/avro/contact, latest version) for one contact."""
    primary = primary_identity(contact)
    data = contact.model_dump()
    for identity, dumped in zip(contact.identities, data["identities"]):
        dumped["primary"] = identity is primary
    data["event_id"] = event_id(contact.connector, contact.provider_id)
    data["recorded_at"] = recorded_at
    data["customer_id"] = None
    data["sealed"] = None  # in the clear; the sink seals it when privacy is on (schemas/privacy.py)
    return data
