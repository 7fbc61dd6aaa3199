"""streams/conversations.py and streams/sla.py: stitching, lifecycle, facts and SLA clocks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time

import pytest

from streams import sla
from streams.conversations import Stitcher
from streams.rules import BusinessHours, StitchRules, rules_from_settings
from threadline.settings import Settings


def rules_from_env(env: dict[str, str]):
    """The rules a worker started with these variables would run (threadline.settings reads them)."""
    return rules_from_settings(Settings(**{k.removeprefix("THREADLINE_").lower(): v for k, v in env.items()}).streams)


T0 = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, 10:00 UTC
SEC, MIN, HOUR = 1000, 60_000, 3_600_000
CUST = "cust-1"


def contact(
    eid,
    channel="twitter",
    at=0,
    *,
    role="customer",
    direction="inbound",
    facts=(),
    language=None,
    event_type="contact.received",
    thread=None,
    provider_id=None,
    metadata=None,
):
    return {
        "event_id": eid,
        "customer_id": CUST,
        "occurred_at": T0 + at,
        "recorded_at": T0 + at + 300,
        "channel": channel,
        "direction": direction,
        "actor": {"role": role},
        "event_type": event_type,
        "facts": [{"kind": k, "value": v, "source": "text"} for k, v in facts],
        "language": language,
        "thread": thread or {},
        "provider_id": provider_id or eid,
        "metadata": metadata or {},
    }


def agent(eid, channel="twitter", at=0, **kw):
    return contact(eid, channel, at, role="agent", direction="outbound", **kw)


def run(contacts, rules=None, state=None):
    s = Stitcher(rules)
    out = []
    for c in contacts:
        state, events = s.apply(state, c)
        out += events
    return state, out


def types(events):
    return [e["event_type"] for e in events]


def of(events, kind):
    return [e for e in events if e["event_type"] == kind]


# --- stitching across channels -------------------------------------------------------------


def test_contacts_within_the_window_are_one_conversation_across_channels_and_switches_are_recorded():
    state, events = run(
        [
            contact("tweet", "twitter", 0),
            contact("dm", "twitter", 6 * MIN),
            contact("mail", "email", 15 * MIN),
            contact("call", "voice", 2 * HOUR),
        ]
    )
    assert len({e["conversation_id"] for e in events}) == 1
    assert [(e["previous_channel"], e["channel"]) for e in of(events, "channel_switched")] == [
        ("twitter", "email"),
        ("email", "voice"),
    ]
    assert [e["contact_event_id"] for e in of(events, "message_appended")] == ["tweet", "dm", "mail", "call"]


def test_a_contact_after_the_inactivity_window_opens_a_new_conversation_and_closes_the_quiet_one():
    _, events = run([contact("c1", "chat", 0), contact("c2", "chat", 3 * HOUR)])  # chat window: 2 h
    opened = of(events, "opened")
    assert len(opened) == 2 and opened[0]["conversation_id"] != opened[1]["conversation_id"]
    [closed] = of(events, "resolved")
    assert closed["conversation_id"] == opened[0]["conversation_id"] and closed["occurred_at"] == T0 + 2 * HOUR


def test_inactivity_windows_are_per_channel_and_configurable():
    _, events = run([contact("m1", "email", 0), contact("m2", "email", 48 * HOUR)])  # email window: 72 h
    assert len(of(events, "opened")) == 1
    rules = rules_from_env({"THREADLINE_STITCH_WINDOWS": "email=3600"}).stitch
    _, events = run([contact("m1", "email", 0), contact("m2", "email", 2 * HOUR)], rules)
    assert len(of(events, "opened")) == 2


def test_lifecycle_opened_waiting_resolved_reopened_then_a_new_conversation():
    _, events = run(
        [
            contact("q", "chat", 0),
            agent("a", "chat", 1 * MIN),
            agent("done", "chat", 5 * MIN, event_type="conversation.resolved"),
            contact("again", "chat", 1 * HOUR),  # within the reopen window (72 h)
            agent("done2", "chat", 2 * HOUR, metadata={"conversation_status": "resolved"}),
            contact("later", "chat", 100 * HOUR),  # after the reopen window: a new conversation
        ]
    )
    lifecycle = [t for t in types(events) if t in ("opened", "waiting_changed", "resolved", "reopened")]
    assert lifecycle == [
        "opened",
        "waiting_changed",
        "waiting_changed",
        "resolved",
        "reopened",
        "waiting_changed",
        "resolved",
        "opened",
        "waiting_changed",
    ]
    waits = [e["waiting_on"] for e in of(events, "waiting_changed")]
    assert waits == ["agent", "customer", "agent", "agent"]
    assert len({e["conversation_id"] for e in of(events, "opened")}) == 2
    assert of(events, "reopened")[0]["conversation_id"] == of(events, "opened")[0]["conversation_id"]


def test_an_email_reply_to_a_message_of_an_earlier_conversation_joins_it():
    _, events = run(
        [
            contact("m1", "email", 0, thread={"message_id": "<m1@shop>"}),
            agent("close", "email", 1 * HOUR, event_type="conversation.resolved"),
            contact("chat", "chat", 10 * 24 * HOUR),  # a new conversation
            contact("reply", "email", 10 * 24 * HOUR + MIN, thread={"in_reply_to": "<m1@shop>"}),
        ]
    )
    first, second = [e["conversation_id"] for e in of(events, "opened")]
    [joined] = [e for e in of(events, "message_appended") if e["contact_event_id"] == "reply"]
    assert joined["conversation_id"] == first
    assert of(events, "reopened")[0]["conversation_id"] == first


def test_a_social_reply_to_an_earlier_post_joins_that_conversation():
    _, events = run(
        [
            contact("post", "twitter", 0, provider_id="tw-111"),
            contact("other", "twitter", 5 * 24 * HOUR),
            contact("reply", "twitter", 5 * 24 * HOUR + MIN, thread={"reply_to_id": "tw-111"}),
        ]
    )
    first = of(events, "opened")[0]["conversation_id"]
    assert [e for e in of(events, "message_appended") if e["contact_event_id"] == "reply"][0][
        "conversation_id"
    ] == first


# --- event time ----------------------------------------------------------------------------


def test_a_late_first_contact_joins_and_restarts_the_clock_at_its_own_time():
    state, events = run([contact("dm", "twitter", 6 * MIN), contact("tweet", "twitter", 0)])
    [conv] = Stitcher().conversations(state)
    assert conv.contacts == ["tweet", "dm"]
    starts = [e["sla"]["started_at"] for e in of(events, "sla_started") if e["sla"]["kind"] == "first_response"]
    assert starts == [T0 + 6 * MIN, T0]
    [ended] = of(events, "merged_into")  # the conversation first opened by the DM now starts at the tweet
    assert ended["merged_into"] == conv.id


def test_a_contact_hours_late_is_placed_by_its_event_time_and_moves_lifecycle_and_clocks():
    state, events = run([contact("a", "chat", 0), contact("b", "chat", 20 * MIN), agent("r", "chat", 30 * SEC)])
    [conv] = Stitcher().conversations(state)
    assert conv.contacts == ["a", "r", "b"]
    assert [(k.kind, k.state) for k in conv.clocks] == [
        ("first_response", "hit"),
        ("resolution", "running"),
        ("next_response", "running"),
    ]


def test_replaying_the_same_contacts_gives_the_same_events():
    story = [
        contact("t", "twitter", 0, facts=[("order_number", "100234")]),
        agent("r", "twitter", 4 * MIN),
        contact("m", "email", 30 * MIN),
        contact("x", "twitter", 20 * MIN),
        agent("d", "email", 2 * HOUR),
    ]
    assert run(copy.deepcopy(story))[1] == run(copy.deepcopy(story))[1]


# --- facts ---------------------------------------------------------------------------------


def test_facts_accumulate_per_customer_and_travel_with_every_event():
    _, events = run(
        [
            contact("form", "web_form", 0, facts=[("insurance", "ski"), ("travel_month", "2027-02")], language="nl"),
            contact("chat", "chat", 10 * MIN, facts=[("insurance", "ski")], language="en"),
        ]
    )
    last = events[-1]
    assert {(f["kind"], f["value"]) for f in last["facts"]} == {
        ("insurance", "ski"),
        ("travel_month", "2027-02"),
        ("language", "en"),
    }
    assert len(last["facts"]) == 3


# --- duplicates ----------------------------------------------------------------------------


def test_a_duplicate_contact_changes_nothing_and_gives_the_same_event_ids_again():
    s = Stitcher()
    state, first = s.apply(None, contact("a", "chat", 0))
    again_state, again = s.apply(state, contact("a", "chat", 0))
    assert again_state == state and again == first


def test_a_duplicate_older_than_the_outbox_gives_no_events_at_all():
    rules = StitchRules(outbox=1)
    state, _ = run([contact("a", "chat", 0), contact("b", "chat", MIN)], rules)
    state2, events = Stitcher(rules).apply(state, contact("a", "chat", 0))
    assert events == [] and state2 == state


# --- SLA clocks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel, target",
    [
        ("chat", 120),
        ("sms", 900),
        ("whatsapp", 900),
        ("twitter", 900),
        ("facebook", 900),
        ("instagram", 900),
        ("email", 3600),
    ],
)
def test_first_response_targets_per_channel(channel, target):
    _, events = run([contact("c", channel, 0)])
    [fr] = [e["sla"] for e in of(events, "sla_started") if e["sla"]["kind"] == "first_response"]
    assert fr["target_seconds"] == target and fr["due_at"] == T0 + target * SEC and fr["started_at"] == T0


def test_a_reply_in_time_is_a_hit_and_a_late_reply_is_a_breach_at_the_due_time():
    _, events = run([contact("c", "chat", 0), agent("r", "chat", 90 * SEC)])
    assert [(e["sla"]["kind"], e["sla"]["elapsed_seconds"]) for e in of(events, "sla_hit")] == [("first_response", 90)]
    _, events = run([contact("c", "chat", 0), agent("r", "chat", 5 * MIN)])
    [breach] = of(events, "sla_breached")
    assert breach["occurred_at"] == T0 + 2 * MIN and breach["sla"]["kind"] == "first_response"
    assert not of(events, "sla_hit")


def test_the_watermark_breaches_a_running_clock_at_its_due_time_and_the_late_reply_reports_nothing_more():
    s = Stitcher()
    state, _ = s.apply(None, contact("c", "chat", 0))
    assert s.next_deadline(state) == T0 + 2 * MIN
    state, early = s.advance(state, T0 + 2 * MIN)  # due, not past
    assert early == []
    state, events = s.advance(state, T0 + 2 * MIN + 3 * SEC)
    assert [(e["event_type"], e["sla"]["kind"], e["occurred_at"]) for e in events] == [
        ("sla_breached", "first_response", T0 + 2 * MIN)
    ]
    state, again = s.advance(state, T0 + 10 * MIN)
    assert again == []
    state, reply = s.apply(state, agent("r", "chat", 5 * MIN))
    assert not of(reply, "sla_breached") and not of(reply, "sla_hit")


def test_next_response_runs_from_the_next_customer_message_to_the_next_reply():
    _, events = run(
        [
            contact("c1", "email", 0),
            agent("r1", "email", 10 * MIN),
            contact("c2", "email", 2 * HOUR),
            agent("r2", "email", 2 * HOUR + 20 * MIN),
        ]
    )
    nr = [e for e in events if e["sla"] and e["sla"]["kind"] == "next_response"]
    assert [(e["event_type"], e["sla"]["started_at"]) for e in nr] == [
        ("sla_started", T0 + 2 * HOUR),
        ("sla_hit", T0 + 2 * HOUR),
    ]
    assert nr[1]["sla"]["elapsed_seconds"] == 20 * 60


def test_the_resolution_clock_pauses_while_waiting_on_the_customer():
    _, events = run(
        [
            contact("c1", "email", 0),
            agent("r1", "email", 1 * HOUR),
            contact("c2", "email", 10 * HOUR),
            agent("done", "email", 11 * HOUR, event_type="conversation.resolved"),
        ]
    )
    [res] = [e for e in events if e["event_type"] == "sla_hit" and e["sla"]["kind"] == "resolution"]
    assert res["sla"]["elapsed_seconds"] == 2 * 3600  # 1 h before the reply + 1 h after the customer's answer


def test_a_store_order_opens_a_conversation_without_starting_a_clock():
    _, events = run([contact("order", "store", 0)])
    assert of(events, "opened") and not of(events, "sla_started")


def test_a_customer_whose_contacts_all_moved_away_has_no_running_clocks_and_its_conversation_ends_merged_into():
    s = Stitcher()
    state, opened = s.apply(None, contact("tweet", "twitter", 0))
    state, events = s.remove(state, ["tweet"], "survivor", gen=1)
    assert s.next_deadline(state) is None and s.conversations(state) == []
    [ended] = events
    assert ended["event_type"] == "merged_into" and ended["merged_into_customer_id"] == "survivor"
    assert ended["conversation_id"] == of(opened, "opened")[0]["conversation_id"]
    assert s.advance(state, T0 + HOUR)[1] == []
    # the same move again (a redelivered command) ends nothing twice
    assert s.remove(state, ["tweet"], "survivor", gen=1)[1] == events
    again, resent = s.apply(state, contact("tweet", "twitter", 0))  # its old assignment, redelivered
    assert again == state and {e["event_id"] for e in resent} <= {e["event_id"] for e in opened}


# --- business hours ------------------------------------------------------------------------

ROME = BusinessHours("Europe/Rome", frozenset(range(5)), time(9), time(18))


def test_business_hours_count_only_opening_time_and_skip_the_weekend():
    friday_1750 = int(datetime(2026, 11, 27, 16, 50, tzinfo=UTC).timestamp() * 1000)  # 17:50 in Rome
    monday_0905 = int(datetime(2026, 11, 30, 8, 5, tzinfo=UTC).timestamp() * 1000)  # 09:05 in Rome
    assert sla.add_ms(friday_1750, 15 * MIN, ROME) == monday_0905
    assert sla.elapsed_ms(friday_1750, monday_0905, ROME) == 15 * MIN
    assert sla.elapsed_ms(friday_1750, monday_0905, None) == monday_0905 - friday_1750


def test_business_hours_are_parsed_from_the_environment_and_move_due_times():
    rules = rules_from_env({"THREADLINE_SLA_BUSINESS_HOURS": "Europe/Rome mon-fri 09:00-18:00"}).stitch
    assert rules.business_hours == ROME
    saturday = int(datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp() * 1000) - T0
    _, events = run([contact("c", "chat", saturday)], rules)
    fr = [e["sla"] for e in of(events, "sla_started") if e["sla"]["kind"] == "first_response"][0]
    assert fr["due_at"] == int(datetime(2026, 11, 30, 8, 2, tzinfo=UTC).timestamp() * 1000)  # Monday 09:02 Rome
    with pytest.raises(ValueError):
        BusinessHours.parse("Europe/Rome 09:00-18:00")


def test_conversation_event_ids_are_deterministic_and_unique():
    _, events = run([contact("c", "chat", 0), agent("r", "chat", MIN), contact("c2", "chat", 2 * MIN)])
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    assert ids == [
        e["event_id"]
        for e in run([contact("c", "chat", 0), agent("r", "chat", MIN), contact("c2", "chat", 2 * MIN)])[1]
    ]
