"""Sales and marketing judgements on top of the aggregates."""

from __future__ import annotations

import pytest

from projectors.judgements import Signals, segments, sentiment_trend, talk_to_support_first


@pytest.mark.parametrize(
    "recent, prior, want",
    [
        (-0.6, 0.1, "worsening"),
        (0.5, -0.1, "improving"),
        (0.1, 0.0, "stable"),
        (None, 0.2, "unknown"),
        (0.1, None, "stable"),
        (-0.3, None, "worsening"),
    ],
)
def test_sentiment_trend_compares_the_last_week_with_the_weeks_before(recent, prior, want):
    assert sentiment_trend(recent, prior) == want


def test_three_support_contacts_in_a_week_and_negative_sentiment_raise_the_flag_with_reasons():
    f = talk_to_support_first(open_conversations=0, breached_slas_7d=0, support_contacts_7d=3, sentiment_7d=-0.5)
    assert f.flag
    assert f.reasons == [
        "3 support contacts in the last 7 days",
        "negative sentiment in the last 7 days (-0.50, worsening)",
    ]


def test_an_open_conversation_or_a_recent_breach_alone_raises_the_flag():
    assert talk_to_support_first(
        open_conversations=1, breached_slas_7d=0, support_contacts_7d=0, sentiment_7d=None
    ).flag
    assert talk_to_support_first(open_conversations=0, breached_slas_7d=1, support_contacts_7d=1, sentiment_7d=0.3).flag


def test_a_quiet_happy_customer_has_no_flag():
    f = talk_to_support_first(open_conversations=0, breached_slas_7d=0, support_contacts_7d=1, sentiment_7d=0.4)
    assert not f.flag and f.reasons == []


def test_a_low_rating_makes_a_detractor_and_a_high_one_a_promoter():
    assert "detractor" in segments(Signals(1, 0.9, 2, 0, "email"))
    assert "promoter" in segments(Signals(5, -0.9, 2, 0, "email"))


def test_without_a_review_a_very_negative_sentiment_makes_a_detractor():
    assert segments(Signals(None, -0.5, 2, 0, "email")) == ["detractor"]
    assert segments(Signals(None, -0.1, 2, 0, "email")) == []


def test_social_first_means_half_the_contacts_on_social_or_a_social_first_contact():
    assert "social_first" in segments(Signals(None, None, 4, 2, "email"))
    assert "social_first" in segments(Signals(None, None, 4, 0, "instagram"))
    assert "social_first" not in segments(Signals(None, None, 4, 1, "email"))


def test_no_inbound_contact_in_ninety_days_is_dormant():
    assert segments(Signals(None, None, 0, 0, None)) == ["dormant"]
