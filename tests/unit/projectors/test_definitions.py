"""The definitions every card counts with (projectors.definitions): support contacts, SLA
breaches, the customer's sentiment and its trend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projectors import definitions as d
from projectors.judgements import talk_to_support_first

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def contact(
    event_id: str,
    ago: timedelta,
    *,
    channel="twitter",
    direction="inbound",
    role="customer",
    department=None,
    event_type="contact.received",
    thread=None,
    sentiment=None,
) -> dict:
    return {
        "event_id": event_id,
        "occurred_at": NOW - ago,
        "channel": channel,
        "direction": direction,
        "actor_role": role,
        "department": department,
        "event_type": event_type,
        "thread": thread,
        "sentiment": sentiment,
    }


@pytest.mark.parametrize(
    "kw, want",
    [
        ({}, True),
        ({"role": None}, True),  # no actor: the customer
        ({"direction": "outbound", "role": "agent"}, False),  # the agent's reply
        ({"direction": "inbound", "role": "agent"}, False),  # an agent, whatever the direction
        ({"direction": "outbound", "role": "customer"}, False),
        ({"role": "bot"}, False),
        ({"role": "system"}, False),
        ({"channel": "review"}, False),
        ({"channel": "store"}, False),  # marketing's, sales'
        ({"department": "sales"}, False),
        ({"department": "support"}, True),
    ],
)
def test_what_counts_as_a_support_contact(kw, want):
    c = contact("e", timedelta(hours=1), **kw)
    assert (
        d.is_support_contact(
            direction=c["direction"], actor_role=c["actor_role"], channel=c["channel"], department=c["department"]
        )
        is want
    )


def test_the_agents_reply_never_counts_and_one_call_is_one_contact():
    contacts = [
        contact("tweet", timedelta(days=1)),
        contact("dm", timedelta(hours=23)),
        contact("reply", timedelta(hours=22), direction="outbound", role="agent", department="support"),
        contact("ring", timedelta(hours=20), channel="voice", thread={"call_id": "CA1"}),
        contact(
            "done", timedelta(hours=20), channel="voice", thread={"call_id": "CA1"}, event_type="contact.status_changed"
        ),
        contact("transcript", timedelta(hours=20), channel="voice", thread={"call_id": "CA1"}),
        contact("old", timedelta(days=20), channel="chat"),
        contact("order", timedelta(days=2), channel="store", department="sales"),
    ]
    assert d.count_support_contacts(contacts, NOW, 7) == 3
    assert d.count_support_contacts(contacts, NOW, 30) == 4


def test_a_window_is_open_at_its_start_and_closed_at_now():
    assert d.in_window(NOW, NOW, 7) and not d.in_window(NOW - timedelta(days=7), NOW, 7)
    assert not d.in_window(NOW + timedelta(seconds=1), NOW, 7) and not d.in_window(None, NOW, 7)


@pytest.mark.parametrize(
    "kw, breached",
    [
        ({"reported_breach": True, "stopped": True, "conversation_open": False}, True),
        ({"reported_breach": False, "stopped": False, "conversation_open": True}, True),  # running, past due
        ({"reported_breach": False, "stopped": True, "conversation_open": True}, False),  # hit in time
        ({"reported_breach": False, "stopped": False, "conversation_open": False}, False),  # resolved, never reported
    ],
)
def test_an_sla_clock_is_breached_at_its_due_time(kw, breached):
    due = NOW - timedelta(hours=3)
    assert d.breached_at(due_at=due, now=NOW, **kw) == (due if breached else None)
    assert (
        d.breached_at(
            due_at=NOW + timedelta(hours=1), reported_breach=False, stopped=False, conversation_open=True, now=NOW
        )
        is None
    )


def test_sentiment_is_the_customers_own_words_in_windows():
    contacts = [
        contact("a", timedelta(days=1), sentiment=-0.5),
        contact("reply", timedelta(hours=23), direction="outbound", role="agent", sentiment=0.0),
        contact("b", timedelta(hours=22), sentiment=0.0),
        contact("c", timedelta(days=10), sentiment=0.4),
        contact("older", timedelta(days=40), sentiment=1.0),
        contact("no-text", timedelta(hours=1), sentiment=None),
    ]
    s = d.sentiment_of(contacts, NOW)
    assert (s.latest, s.recent_7d, s.prior_23d, s.avg_30d) == (0.0, -0.25, 0.4, -0.033)
    assert s.trend == "worsening"


@pytest.mark.parametrize(
    "recent, prior, want",
    [
        (-0.25, None, "worsening"),  # a first complaint, nothing before: compared with neutral
        (0.1, None, "stable"),
        (0.3, None, "improving"),
        (-0.25, -0.3, "stable"),
        (None, 0.2, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_the_trend_compares_with_the_weeks_before_or_with_neutral(recent, prior, want):
    assert d.sentiment_trend(recent, prior) == want


def test_the_flags_sentiment_reason_names_the_same_number_and_trend_as_the_card():
    s = d.Sentiment(latest=-1.0, recent_7d=-0.25, prior_23d=None, avg_30d=-0.25)
    f = talk_to_support_first(
        open_conversations=0,
        breached_slas_7d=0,
        support_contacts_7d=2,
        sentiment_7d=s.recent_7d,
        sentiment_prior_23d=s.prior_23d,
    )
    assert f.reasons == [f"negative sentiment in the last 7 days (-0.25, {s.trend})"]
    assert s.as_dict() == {
        "latest": -1.0,
        "recent_7d": -0.25,
        "prior_23d": None,
        "avg_30d": -0.25,
        "baseline": "neutral",
        "trend": "worsening",
    }


def test_the_sql_views_are_rendered_from_the_same_constants():
    sql = d.support_contact_sql("c")
    assert all(f"'{ch}'" in sql for ch in d.NON_SUPPORT_CHANNELS)
    assert "c.actor_role" in sql and "c.direction" in sql
    views = d.views_sql().format(s="x")
    for name in ("x.support_contacts", "x.sla_breaches", "x.customer_sentiment"):
        assert f"create view {name} as" in views
    assert f"interval '{d.RECENT_DAYS} days'" in views and f"interval '{d.WINDOW_DAYS} days'" in views
