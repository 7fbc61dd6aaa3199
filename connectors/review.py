"""Reviews (``POST /webhooks/review``): a generic JSON schema any review source can be mapped to.

    {"review_id": "r-1", "platform": "trustpilot", "rating": 2, "author_handle": "@emre.k",
     "text": "...", "url": "https://...", "created_at": "2026-11-22T10:00:00+01:00",
     "title": null, "author_email": null, "marketing_consent": null}

The author's handle on the platform is the primary identity (``social``); the rating goes to
``metadata.rating`` and the URL to ``metadata.url``; ``marketing_consent`` (when the platform
asked) becomes a consent signal. Signed with ``X-Threadline-Signature``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from connectors import generic
from connectors.base import Connector, MapContext, build_contact
from connectors.normalize import dedupe_identities, email_identity, parse_time, social_identity

NAME = "review"


class Review(BaseModel):
    model_config = ConfigDict(extra="ignore")
    review_id: str = Field(min_length=1, max_length=256)
    platform: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    rating: float = Field(ge=0, le=10)
    author_handle: str = Field(min_length=1, max_length=256)
    text: str | None = Field(default=None, max_length=20000)
    url: str | None = None
    created_at: datetime
    title: str | None = None
    author_email: str | None = None
    marketing_consent: bool | None = None


def to_contact(r: Review, ctx: MapContext):
    platform = r.platform.lower()
    idents = dedupe_identities(
        [social_identity(r.author_handle, platform, primary=True), email_identity(r.author_email)]
    )
    meta = {"rating": f"{r.rating:g}", "platform": platform}
    if r.url:
        meta["url"] = r.url
    consent = (
        [{"purpose": "marketing", "channel": platform, "granted": r.marketing_consent, "source": "review"}]
        if r.marketing_consent is not None
        else []
    )
    return build_contact(
        {
            "provider_id": f"{platform}:{r.review_id}",
            "connector": NAME,
            "channel": "review",
            "direction": "inbound",
            "occurred_at": parse_time(r.created_at, "created_at"),
            "actor": {"role": "customer", "department": "marketing"},
            "identities": idents,
            "subject": r.title,
            "text": r.text,
            "consent": consent,
            "metadata": meta,
            "thread": {"message_id": r.review_id},
        },
        ctx,
    )


parse = generic.parser(Review, to_contact)

CONNECTOR = Connector(
    NAME, ("application/json",), "webhook_secret", generic.verify, parse, doc="reviews from any platform (generic JSON)"
)
