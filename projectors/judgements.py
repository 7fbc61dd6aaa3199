"""Derived judgements the read API adds to the aggregates: pure functions, no I/O.

The SQL views give counts and averages; what they *mean* for sales and marketing (a sentiment
trend, the "talk to support first" flag, segments) is decided here, in plain Python, so the
rules are tested on their own and read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from projectors.definitions import sentiment_trend  # noqa: F401  (the one definition, re-exported)

NEGATIVE_SENTIMENT = -0.2  # a recent average at or below this is a problem for sales
DETRACTOR_RATING = 2  # a latest review rating at or below this: detractor
PROMOTER_RATING = 4  # at or above this: promoter
DETRACTOR_SENTIMENT = -0.4  # no review: an average sentiment at or below this is a detractor too
SOCIAL_CHANNELS = frozenset({"twitter", "facebook", "instagram"})
SOCIAL_FIRST_SHARE = 0.5  # at least half of the inbound contacts on social channels


@dataclass(frozen=True)
class SupportFirst:
    flag: bool
    reasons: list[str]


def talk_to_support_first(
    *,
    open_conversations: int,
    breached_slas_7d: int,
    support_contacts_7d: int,
    sentiment_7d: float | None,
    sentiment_prior_23d: float | None = None,
) -> SupportFirst:
    """Sales should hear from support before calling when there is an open or recent problem.
    The numbers are the card's own (projectors.definitions), so a reason never contradicts it:
    the sentiment reason names the trend the card shows."""
    reasons = []
    if open_conversations:
        reasons.append(f"{open_conversations} open support conversation(s)")
    if breached_slas_7d:
        reasons.append(f"{breached_slas_7d} breached SLA(s) in the last 7 days")
    if support_contacts_7d >= 3:
        reasons.append(f"{support_contacts_7d} support contacts in the last 7 days")
    if sentiment_7d is not None and sentiment_7d <= NEGATIVE_SENTIMENT and support_contacts_7d:
        trend = sentiment_trend(sentiment_7d, sentiment_prior_23d)
        reasons.append(f"negative sentiment in the last 7 days ({sentiment_7d:+.2f}, {trend})")
    return SupportFirst(bool(reasons), reasons)


@dataclass(frozen=True)
class Signals:
    """What marketing knows about one customer, from ``marketing.customer_signals``."""

    last_rating: int | None
    sentiment_30d: float | None
    inbound_90d: int
    social_inbound_90d: int
    first_channel: str | None


SEGMENTS = ("detractor", "promoter", "social_first", "dormant")


def segments(s: Signals) -> list[str]:
    """Simple segments, first version:

    * detractor: latest review rated <= 2, or no review and a 30-day sentiment <= -0.4;
    * promoter: latest review rated >= 4 (and not a detractor);
    * social_first: at least half of the last 90 days' inbound contacts on social channels, or
      the very first contact was social;
    * dormant: no inbound contact in the last 90 days.
    """
    out = []
    if s.last_rating is not None:
        if s.last_rating <= DETRACTOR_RATING:
            out.append("detractor")
        elif s.last_rating >= PROMOTER_RATING:
            out.append("promoter")
    elif s.sentiment_30d is not None and s.sentiment_30d <= DETRACTOR_SENTIMENT:
        out.append("detractor")
    if (
        s.inbound_90d and s.social_inbound_90d / s.inbound_90d >= SOCIAL_FIRST_SHARE
    ) or s.first_channel in SOCIAL_CHANNELS:
        out.append("social_first")
    if s.inbound_90d == 0:
        out.append("dormant")
    return out
