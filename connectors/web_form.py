"""Web forms (``POST /webhooks/web-form``): generic JSON, any fields.

    {"submission_id": "f-77", "form_id": "ski-insurance", "submitted_at": "2026-11-22T09:00:00Z",
     "fields": {"email": "sanne@example.nl", "phone": "06 12345678", "name": "Sanne de Vries",
                "policy": "ski", "travel_dates": "2027-01-10/2027-01-17", "newsletter": true,
                "message": "..."},
     "page_url": "https://...", "visitor_id": "v-42"}

Fields named like an email / phone become identities; a field named ``message`` / ``comment`` /
``question`` is the contact's text; boolean fields named ``newsletter``, ``marketing`` or
``consent_*`` become consent signals; every other filled field becomes a fact with the field
name as its kind and ``form:<form_id>`` as its source. Signed with ``X-Threadline-Signature``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors import generic
from connectors.base import Connector, MapContext, build_contact
from connectors.contact import IdentityIn
from connectors.normalize import dedupe_identities, email_identity, parse_time, phone_identity

NAME = "web-form"
EMAIL_FIELDS = {"email", "e-mail", "e_mail", "mail", "email_address"}
PHONE_FIELDS = {"phone", "telephone", "tel", "mobile", "phone_number", "telefono", "telefoon", "telefon"}
TEXT_FIELDS = {"message", "comment", "comments", "question", "text", "messaggio", "bericht", "wiadomosc", "mesaj"}
NAME_FIELDS = {"name", "full_name", "nome", "naam", "imie", "ad"}
CONSENT_FIELDS = {"newsletter", "marketing", "marketing_consent"}


class Submission(BaseModel):
    model_config = ConfigDict(extra="ignore")
    submission_id: str = Field(min_length=1, max_length=256)
    form_id: str = Field(min_length=1, max_length=128)
    submitted_at: datetime
    fields: dict[str, Any] = Field(min_length=1)
    page_url: str | None = None
    visitor_id: str | None = None


def to_contact(s: Submission, ctx: MapContext):
    idents: list[IdentityIn | None] = []
    facts, consent, text, name = [], [], [], None
    for key, value in s.fields.items():
        k = key.strip().lower()
        if value is None or value == "" or value == []:
            continue
        if k in EMAIL_FIELDS:
            idents.insert(0, email_identity(str(value), primary=True))
        elif k in PHONE_FIELDS:
            idents.append(phone_identity(str(value), ctx.region))
        elif k in TEXT_FIELDS:
            text.append(str(value))
        elif isinstance(value, bool) and (k in CONSENT_FIELDS or k.startswith("consent_")):
            purpose = (
                k.removeprefix("consent_")
                if k.startswith("consent_")
                else ("newsletter" if k == "newsletter" else "marketing")
            )
            consent.append({"purpose": purpose, "granted": value, "source": f"form:{s.form_id}.{key}"})
        else:
            if k in NAME_FIELDS:
                name = str(value)
            rendered = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            facts.append({"kind": k, "value": rendered[:2000], "source": f"form:{s.form_id}"})
    if s.visitor_id:
        idents.append(IdentityIn(kind="cookie", value=s.visitor_id))
    idents = dedupe_identities(idents)
    if idents and not any(i.primary for i in idents):
        idents[0] = idents[0].model_copy(update={"primary": True})
    return build_contact(
        {
            "provider_id": f"{s.form_id}:{s.submission_id}",
            "connector": NAME,
            "channel": "web_form",
            "direction": "inbound",
            "occurred_at": parse_time(s.submitted_at, "submitted_at"),
            "actor": {"role": "customer", "display_name": name},
            "identities": idents,
            "subject": s.form_id,
            "text": "\n".join(text) or None,
            "facts": facts,
            "consent": consent,
            "thread": {"session_id": s.submission_id},
            "metadata": {"form_id": s.form_id} | ({"page_url": s.page_url} if s.page_url else {}),
        },
        ctx,
    )


parse = generic.parser(Submission, to_contact)

CONNECTOR = Connector(
    NAME,
    ("application/json",),
    "webhook_secret",
    generic.verify,
    parse,
    doc="web form submissions (generic JSON, any fields)",
)
