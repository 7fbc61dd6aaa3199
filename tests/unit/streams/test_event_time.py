"""Conversations and clocks as a function of the set of a customer's contacts, in event time.

The property: whatever the arrival order, duplication or delay of the contacts (and of the
identity moves between customers), the conversations and clock outcomes are those of one
in-order pass, and the events the worker emits, folded by version, give that same state."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.conversations import Stitcher, conversations_of, fold, snapshots, view
from streams.rules import StitchRules

T0 = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, 10:00 UTC
SEC, MIN, HOUR = 1000, 60_000, 3_600_000
RULES = StitchRules()


def contact(
    eid,
    channel="chat",
    at=0,
    *,
    cust="cust-1",
    role="customer",
    direction="inbound",
    event_type="contact.received",
    thread=None,
    metadata=None,
    recorded=None,
):
    return {
        "event_id": eid,
        "customer_id": cust,
        "occurred_at": T0 + at,
        "recorded_at": T0 + (recorded if recorded is not None else at) + 300,
        "channel": channel,
        "direction": direction,
        "actor": {"role": role},
        "event_type": event_type,
        "facts": [],
        "language": None,
        "thread": thread or {},
        "provider_id": f"p-{eid}",
        "metadata": metadata or {},
    }


def agent(eid, channel="chat", at=0, **kw):
    return contact(eid, channel, at, role="agent", direction="outbound", **kw)


def outcome(convs):
    """Everything the rules decide, comparable across runs."""
    return [
        (
            cv.id,
            tuple(cv.contacts),
            cv.status,
            cv.resolved_at,
            cv.waiting_on,
            tuple((k.kind, k.started, k.state, k.end) for k in cv.clocks),
        )
        for cv in convs
    ]


def feed(ops, rules=RULES, final_wm=None):
    """Apply operations as the worker does (one state per customer, the partition's watermark =
    the latest event time seen), then let the watermark reach ``final_wm`` (the idle timer)."""
    s = Stitcher(rules)
    states: dict[str, dict] = {}
    events: list[dict] = []
    wm = None
    for op in ops:
        if op[0] == "add":
            _, record, gen = op
            wm = max(wm or record["occurred_at"], record["occurred_at"])
            states[record["customer_id"]], out = s.apply(states.get(record["customer_id"]), record, wm=wm, gen=gen)
        else:
            _, cust, ids, to, gen = op
            states[cust], out = s.remove(states.get(cust), ids, to, gen=gen, wm=wm)
            states[cust]["customer_id"] = cust
        events += out
    if final_wm is not None:
        for cust in sorted(states):
            states[cust], out = s.advance(states[cust], final_wm)
            events += out
    return s, states, events


def by_customer(records):
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["customer_id"], []).append(r)
    return out


# -- the findings -------------------------------------------------------------------------------


def test_a_late_chat_message_with_an_earlier_sent_at_gives_one_conversation_not_two():
    msgs = [contact(f"c{i}", "chat", i * MIN) for i in (1, 2, 3)]
    late = contact("c0", "chat", 0)  # sent before the others, arrives last
    _, states, events = feed([("add", m, 0) for m in [*msgs, late]])
    convs = Stitcher().conversations(states["cust-1"])
    assert [cv.contacts for cv in convs] == [["c0", "c1", "c2", "c3"]]
    folded = fold(events)
    assert list(folded) == [convs[0].id] and folded[convs[0].id]["messages"] == 4
    # the conversation first opened from c1 ends as merged into the one that starts at c0
    [ended] = [e for e in events if e["event_type"] == "merged_into"]
    assert ended["merged_into"] == convs[0].id and ended["conversation_id"] != convs[0].id


def test_history_imported_after_live_traffic_is_one_journey():
    morning = [
        contact("mail", "email", 0, thread={"message_id": "<m@x>"}),
        contact("call", "voice", 30 * MIN, thread={"call_id": "CA1"}),
        agent("reply", "email", 40 * MIN, thread={"in_reply_to": "<m@x>"}),
    ]
    live = [
        contact("sms", "sms", 5 * HOUR),  # no provider time: stamped at receive time
        contact("transcript", "voice", 5 * HOUR, thread={"call_id": "CA1"}),
    ]
    in_order = conversations_of("cust-1", [view(c) for c in morning + live], RULES)
    _, states, events = feed([("add", c, 0) for c in live + morning])
    convs = Stitcher().conversations(states["cust-1"])
    assert outcome(convs) == outcome(in_order)
    assert len(convs) == 1 and set(convs[0].contacts) == {"mail", "call", "reply", "sms", "transcript"}
    assert fold(events) == snapshots(in_order, RULES)


def test_a_transcription_joins_its_call_by_callsid_whatever_its_time():
    rules = StitchRules(windows={"voice": 3600, "other": 3600})
    call = contact("call", "voice", 0, thread={"call_id": "CA9"})
    other = contact("chat", "chat", 3 * HOUR)  # a later conversation
    transcript = contact("tr", "voice", 5 * HOUR, thread={"call_id": "CA9"})  # stamped hours later
    convs = conversations_of("cust-1", [view(c) for c in (call, other, transcript)], rules)
    assert [cv.contacts for cv in convs] == [["call", "tr"], ["chat"]]


def test_a_breach_is_a_fact_of_event_time_not_of_the_wall_clock():
    question, reply = contact("q", "chat", 0), agent("r", "chat", 5 * MIN)  # chat target: 2 min
    live = feed([("add", question, 0), ("add", reply, 0)])[2]
    replay = feed([("add", question, 0), ("add", reply, 0)])[2]
    breaches = [e for e in live if e["event_type"] == "sla_breached"]
    assert [(e["event_id"], e["occurred_at"], e["sla"]["kind"]) for e in breaches] == [
        (e["event_id"], e["occurred_at"], e["sla"]["kind"]) for e in replay if e["event_type"] == "sla_breached"
    ]
    assert [e["occurred_at"] for e in breaches] == [T0 + 2 * MIN]
    # the watermark, not the arrival time, breaches a clock nobody answered: an idle partition's
    # watermark at due + 1 ms breaches it, at the due time exactly it does not
    s = Stitcher()
    state, _ = s.apply(None, question)
    assert s.next_deadline(state) == T0 + 2 * MIN
    assert s.advance(state, T0 + 2 * MIN)[1] == []
    _, out = s.advance(state, T0 + 2 * MIN + 1)
    assert [(e["event_type"], e["occurred_at"], e["event_id"]) for e in out] == [
        ("sla_breached", T0 + 2 * MIN, breaches[0]["event_id"])
    ]


def test_a_clock_is_hit_or_breached_never_both():
    # resolution clock: the resolve lands at the instant the clock falls due
    rules = StitchRules(resolution_seconds=3600)
    ops = [contact("q", "email", 0), agent("done", "email", HOUR, event_type="conversation.resolved")]
    for order in (ops, ops[::-1]):
        s, states, events = feed([("add", c, 0) for c in order], rules, final_wm=T0 + 2 * HOUR)
        res = [
            e["event_type"]
            for e in events
            if e["sla"] and e["sla"]["kind"] == "resolution" and e["event_type"] in ("sla_hit", "sla_breached")
        ]
        assert res == ["sla_hit"]
    # a breach by the watermark, then the reply that was sent before the due time arrives late:
    # the clock is hit, and the folded state counts no breach
    s = Stitcher()
    state, _ = s.apply(None, contact("q", "chat", 0))
    state, breached = s.advance(state, T0 + 10 * MIN)
    assert [e["event_type"] for e in breached if e["sla"]] == ["sla_breached"]
    state, late = s.apply(state, agent("r", "chat", 1 * MIN), wm=T0 + 10 * MIN)
    assert [e["event_type"] for e in late if e["sla"] and e["sla"]["kind"] == "first_response"] == ["sla_hit"]
    [conv] = s.conversations(state)
    assert [(k.kind, k.state) for k in conv.clocks if k.kind == "first_response"] == [("first_response", "hit")]
    assert fold(breached + late)[conv.id]["breaches"] == 0


def test_a_merge_counts_one_breach_once():
    """Absorbed customer B's conversation ends merged_into; the survivor A's conversation holds the
    contacts, and the one breached first-response clock is counted once across both."""
    a1 = contact("a1", "twitter", 0, cust="A")
    b1 = contact("b1", "twitter", MIN, cust="B")
    reply = agent("r", "twitter", 40 * MIN, cust="B")  # after the 15-minute target: one breach
    ops = [
        ("add", a1, 0),
        ("add", b1, 1),
        ("add", reply, 2),
        ("rm", "B", ["b1", "r"], "A", 3),
        ("add", {**b1, "customer_id": "A"}, 3),
        ("add", {**reply, "customer_id": "A"}, 3),
    ]
    s, states, events = feed(ops, final_wm=T0 + 2 * HOUR)
    assert s.conversations(states["B"]) == []
    ended = [e for e in events if e["event_type"] == "merged_into"]
    assert [(e["customer_id"], e["merged_into_customer_id"]) for e in ended] == [("B", "A")]
    folded = fold(events)
    assert sum(v["breaches"] for v in folded.values()) == 1
    [conv] = s.conversations(states["A"])
    assert conv.contacts == ["a1", "b1", "r"]


def test_an_unmerge_takes_the_contacts_that_moved_away_out_of_the_conversation():
    a1, b1 = contact("a1", "sms", 0, cust="A"), contact("b1", "sms", 10 * MIN, cust="A")
    ops = [("add", a1, 0), ("add", b1, 0), ("rm", "A", ["b1"], "B", 5), ("add", {**b1, "customer_id": "B"}, 5)]
    s, states, events = feed(ops)
    assert [cv.contacts for cv in s.conversations(states["A"])] == [["a1"]]
    assert [cv.contacts for cv in s.conversations(states["B"])] == [["b1"]]
    assert [e["contact_event_id"] for e in events if e["event_type"] == "message_removed"] == ["b1"]
    assert sorted(v["messages"] for v in fold(events).values()) == [1, 1]


def test_events_of_one_conversation_carry_increasing_versions():
    _, _, events = feed([("add", contact("q", "chat", 0), 0), ("add", agent("r", "chat", MIN), 0)])
    versions = [e["version"] for e in events]
    assert versions == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events)


def test_a_redelivered_contact_gives_the_same_events_and_no_new_state():
    s = Stitcher()
    state, first = s.apply(None, contact("q", "chat", 0))
    again, events = s.apply(state, contact("q", "chat", 0))
    assert again == state and events == first


def test_a_contact_older_than_the_retention_is_appended_to_the_frozen_conversation_it_falls_in():
    rules = StitchRules(retention_seconds=24 * 3600)
    old = [contact("q", "chat", 0), agent("done", "chat", MIN, event_type="conversation.resolved")]
    new = contact("n", "chat", 4 * 24 * HOUR)  # the watermark moves 4 days on: the first conversation freezes
    s, states, events = feed([("add", c, 0) for c in [*old, new]], rules)
    state = states["cust-1"]
    assert [f["n"] for f in state["frozen"]] == [2] and [r[0] for r in state["contacts"]] == ["n"]
    first = next(e["conversation_id"] for e in events if e["event_type"] == "opened")
    state, out = s.apply(state, contact("late", "chat", 30 * SEC), wm=T0 + 4 * 24 * HOUR)
    assert [(e["event_type"], e["conversation_id"], e["messages"]) for e in out] == [("message_appended", first, 3)]
    assert out[0]["version"] > max(e["version"] for e in events if e["conversation_id"] == first)
    # the duplicate of a frozen contact changes nothing (a redelivery may re-send what it gave)
    again, resent = s.apply(state, contact("q", "chat", 0))
    assert again == state and {e["event_id"] for e in resent} <= {e["event_id"] for e in events}


# -- the property ---------------------------------------------------------------------------------

CHANNELS = ("chat", "email", "twitter", "voice", "sms", "store")


@st.composite
def journeys(draw):
    """Contacts of up to three customers within four days (no conversation freezes), with replies,
    call ids and resolutions; then identity moves (a merge, maybe an unmerge) among them."""
    n = draw(st.integers(1, 14))
    customers = ["A", "B", "C"][: draw(st.integers(1, 3))]
    records = []
    for i in range(n):
        eid = f"e{i:02d}"
        cust = draw(st.sampled_from(customers))
        at = draw(st.integers(0, 4 * 24 * 60)) * MIN // draw(st.sampled_from([1, 1, 8]))
        channel = draw(st.sampled_from(CHANNELS))
        thread = {"message_id": f"<{eid}>"}
        if records and draw(st.booleans()):
            thread["in_reply_to"] = f"<{draw(st.sampled_from(records))['event_id']}>"
        if draw(st.integers(0, 3)) == 0:
            thread["call_id"] = draw(st.sampled_from(["CA1", "CA2"]))
        kind = draw(st.sampled_from(["customer", "customer", "agent", "resolve"]))
        if kind == "customer":
            records.append(contact(eid, channel, at, cust=cust, thread=thread))
        else:
            records.append(
                agent(
                    eid,
                    channel,
                    at,
                    cust=cust,
                    thread=thread,
                    event_type="conversation.resolved" if kind == "resolve" else "contact.received",
                )
            )
    ops = [("add", r, 0) for r in records]
    owner = {r["event_id"]: r["customer_id"] for r in records}
    gen = 0
    for _ in range(draw(st.integers(0, 2))):  # identity moves: merge one customer into another, or split some off
        gen += 1
        src, dst = draw(st.sampled_from(customers)), draw(st.sampled_from(["A", "B", "C", "D"]))
        moving = [e for e, c in owner.items() if c == src]
        if src == dst or not moving:
            continue
        if draw(st.booleans()):
            moving = draw(st.lists(st.sampled_from(moving), min_size=1, unique=True))
        ops.append(("rm", src, sorted(moving), dst, gen))
        for e in moving:
            owner[e] = dst
            ops.append(("add", {**next(r for r in records if r["event_id"] == e), "customer_id": dst}, gen))
    return records, ops, owner


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journeys(), st.randoms(use_true_random=False), st.integers(0, 3))
def test_any_arrival_order_with_duplicates_gives_the_conversations_of_one_in_order_pass(journey, rnd, dups):
    records, ops, owner = journey
    final_wm = max(r["occurred_at"] for r in records) + 10 * 24 * HOUR
    shuffled = list(ops) + [rnd.choice(ops) for _ in range(dups)]
    rnd.shuffle(shuffled)
    s, states, events = feed(shuffled, final_wm=final_wm)
    in_order_events: list[dict] = []
    for cust in sorted({*owner.values()}):
        mine = sorted(
            (r for r in records if owner[r["event_id"]] == cust), key=lambda r: (r["occurred_at"], r["event_id"])
        )
        expected = conversations_of(cust, [view({**r, "customer_id": cust}) for r in mine], RULES, final_wm)
        assert outcome(s.conversations(states.get(cust))) == outcome(expected)
        # one in-order pass of the same contacts, folded, is the same state as the shuffled run, folded
        _, _, evs = feed([("add", {**r, "customer_id": cust}, 0) for r in mine], final_wm=final_wm)
        in_order_events += evs
        want = snapshots(expected, RULES)
        got = {cid: v for cid, v in fold(events).items() if cid in want or v["messages"]}
        assert {cid: got.get(cid) for cid in want} == want
    assert {cid for cid, v in fold(events).items()} == set(fold(in_order_events))
    assert fold(events) == fold(in_order_events)
    by_id = {}
    for e in events:  # one id, one event (a re-sent one is the same event)
        assert by_id.setdefault(e["event_id"], e) == e


def test_a_customer_with_many_contacts_in_random_order_matches_the_in_order_pass():
    rnd = random.Random(7)
    records = []
    for i in range(60):
        at = rnd.randrange(0, 3 * 24 * 60) * MIN
        maker = contact if rnd.random() < 0.6 else agent
        records.append(maker(f"x{i:02d}", rnd.choice(CHANNELS), at))
    shuffled = records[:]
    rnd.shuffle(shuffled)
    final = max(r["occurred_at"] for r in records) + 5 * 24 * HOUR
    s, states, events = feed([("add", r, 0) for r in shuffled], final_wm=final)
    expected = conversations_of("cust-1", [view(r) for r in records], RULES, final)
    assert outcome(s.conversations(states["cust-1"])) == outcome(expected)
    assert fold(events) == snapshots(expected, RULES)


HOUR_MS = 3_600_000


def test_an_unanswered_customer_is_never_resolved_by_inactivity_only_its_clocks_breach():
    """Giulia calls and nobody answers: a day later (past voice's 24 h window) her conversation is
    still open, waiting on an agent, with its first-response clock breached at its due time; the
    same conversation answered by an agent is resolved by inactivity at its window's end."""
    views = [view(contact("call", "voice", 0))]
    (conv,) = conversations_of("cust-1", views, RULES, wm=T0 + 30 * HOUR_MS)
    assert conv.status == "open" and conv.waiting_on == "agent"
    first = next(k for k in conv.clocks if k.kind == "first_response")
    assert first.state == "breached" and first.end == T0 + RULES.target("voice") * 1000

    answered = views + [view(agent("reply", "voice", 60_000))]
    (conv,) = conversations_of("cust-1", answered, RULES, wm=T0 + 30 * HOUR_MS)
    assert conv.status == "resolved" and conv.resolved_by == "inactivity"
    assert conv.resolved_at == T0 + 60_000 + RULES.window("voice") * 1000


# -- what a replay and every arrival order give the same: the fold and the standing breaches ----

SLA_EVENT_TYPES = ("sla_started", "sla_hit", "sla_breached", "sla_withdrawn")


def standing_breaches(events) -> dict[tuple, dict]:
    """(conversation, clock kind, clock start) → its breach event, for every clock whose latest
    clock event (highest version: sla_started, sla_hit, sla_breached, sla_withdrawn) is a breach,
    in a conversation the fold keeps."""
    kept = fold(events)
    latest: dict[tuple, dict] = {}
    for e in events:
        if e["event_type"] in SLA_EVENT_TYPES and e["conversation_id"] in kept:
            key = (e["conversation_id"], e["sla"]["kind"], e["sla"]["started_at"])
            if key not in latest or e["version"] > latest[key]["version"]:
                latest[key] = e
    return {k: e for k, e in latest.items() if e["event_type"] == "sla_breached"}


def breached_clocks(convs) -> dict[tuple, int]:
    return {(cv.id, k.kind, k.started): k.end for cv in convs for k in cv.clocks if k.state == "breached"}


def same_minute_reopen() -> tuple[dict, ...]:
    """An agent's hello at 10:00; a question, its resolution and a new question at 10:01 (resolved
    and reopened in the same minute: two resolution clocks start at 10:01); a question of 10:00."""
    return (
        agent("a-hello", "chat", 0, cust="A"),
        contact("b-question", "chat", MIN, cust="A"),
        agent("c-done", "chat", MIN, cust="A", event_type="conversation.resolved"),
        contact("d-again", "chat", MIN, cust="A"),
        contact("e-early", "chat", 0, cust="A"),
    )


class AsGiven(random.Random):
    """The arrival order as written (an ``@example``'s random: its shuffle keeps the order)."""

    def shuffle(self, x) -> None:  # type: ignore[override]
        return None


def test_a_late_contact_that_renumbers_two_clocks_of_one_start_leaves_the_breach_standing():
    """Resolved and reopened in the same minute: two resolution clocks start at 10:01, the first hit
    (``resolution:10:01``), the second breached by a watermark that jumped ahead while the partition
    was idle (``resolution:10:01#2``). A customer message of 10:00 arrives late: the first clock now
    starts at 10:00 and the breached one is the only clock of 10:01 (its key loses the ``#2``). A
    reader knows a clock by kind and start alone, so the withdrawal of ``#2`` must not be the latest
    event of the breached clock: its breach stands, at its due time, with the in-order pass's id."""
    hello, question, done, again, early = same_minute_reopen()
    idle_wm = T0 + 2 * 24 * HOUR
    s, state, events = Stitcher(RULES), None, []
    for c in (hello, question, done, again):
        state, out = s.apply(state, c, wm=c["occurred_at"])
        events += out
    state, out = s.advance(state, idle_wm)
    events += out
    state, out = s.apply(state, early, wm=idle_wm)
    events += out
    [conv] = s.conversations(state)
    due = T0 + MIN + RULES.resolution_seconds * 1000
    assert breached_clocks([conv]) == {
        (conv.id, "next_response", T0 + MIN): T0 + MIN + RULES.target("chat") * 1000,
        (conv.id, "resolution", T0 + MIN): due,
    }
    got = standing_breaches(events)
    assert {k: e["occurred_at"] for k, e in got.items()} == breached_clocks([conv])
    in_order = feed([("add", c, 0) for c in (hello, early, question, done, again)], final_wm=idle_wm)[2]
    want = standing_breaches(in_order)
    assert {k: e["event_id"] for k, e in got.items()} == {k: e["event_id"] for k, e in want.items()}
    assert fold(events) == fold(in_order)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journeys(), st.randoms(use_true_random=False), st.integers(0, 3), st.integers(0, 3))
@example(  # the three of 10:01, the idle timer, then the hello and the question of 10:00
    journey=(
        list(same_minute_reopen()),
        [("add", r, 0) for r in (*same_minute_reopen()[1:4], same_minute_reopen()[0], same_minute_reopen()[4])],
        {r["event_id"]: "A" for r in same_minute_reopen()},
    ),
    rnd=AsGiven(),
    dups=0,
    idle=3,
)
def test_every_arrival_order_emits_one_standing_breach_event_per_breached_clock_with_the_same_id_and_time(
    journey, rnd, dups, idle
):
    """docs/streams.md, "What replay guarantees": whatever the order (and a watermark that jumps
    ahead while a partition is idle, as live), every clock that ends breached has a breach event
    that stands, at its due time, with the same id as in one in-order pass, and the fold counts
    exactly those."""
    records, ops, owner = journey
    final_wm = max(r["occurred_at"] for r in records) + 10 * 24 * HOUR
    shuffled = list(ops) + [rnd.choice(ops) for _ in range(dups)]
    rnd.shuffle(shuffled)
    s = Stitcher(RULES)
    states: dict[str, dict] = {}
    events: list[dict] = []
    wm = None
    for i, op in enumerate(shuffled):
        if idle and i % (idle + 1) == idle and states:  # the idle timer: the wall clock is far ahead
            for cust in sorted(states):
                states[cust], out = s.advance(states[cust], final_wm)
                events += out
            wm = final_wm
        if op[0] == "add":
            wm = max(wm or op[1]["occurred_at"], op[1]["occurred_at"])
            states[op[1]["customer_id"]], out = s.apply(states.get(op[1]["customer_id"]), op[1], wm=wm, gen=op[2])
        else:
            states[op[1]], out = s.remove(states.get(op[1]), op[2], op[3], gen=op[4], wm=wm)
            states[op[1]]["customer_id"] = op[1]
        events += out
    for cust in sorted(states):
        states[cust], out = s.advance(states[cust], final_wm)
        events += out
    expected, in_order = {}, []
    for cust in sorted({*owner.values()}):
        mine = sorted(
            (r for r in records if owner[r["event_id"]] == cust), key=lambda r: (r["occurred_at"], r["event_id"])
        )
        expected.update(
            breached_clocks(conversations_of(cust, [view({**r, "customer_id": cust}) for r in mine], RULES, final_wm))
        )
        in_order += feed([("add", {**r, "customer_id": cust}, 0) for r in mine], final_wm=final_wm)[2]
    got, want = standing_breaches(events), standing_breaches(in_order)
    assert {k: e["occurred_at"] for k, e in want.items()} == expected
    assert {k: got[k]["occurred_at"] for k in expected if k in got} == expected
    assert all(got[k]["recorded_at"] == got[k]["occurred_at"] for k in expected)
    for k in expected:  # the in-order pass's id, unless this run breached the clock more than once
        # (breached, withdrawn by a late reply, breached again): a repeated id is salted with the version
        times = sum(
            1
            for e in events
            if e["event_type"] == "sla_breached"
            and (e["conversation_id"], e["sla"]["kind"], e["sla"]["started_at"]) == k
        )
        assert got[k]["event_id"] == want[k]["event_id"] or times > 1, k
    # a clock a late contact withdrew (an earlier contact moved its start, or its contact moved
    # away) gets an sla_withdrawn event, so no breach event of a clock that is not breached stands
    assert set(got) == set(expected)
    folded = fold(events)
    for cid, state in folded.items():
        assert state["breaches"] == sum(1 for k in expected if k[0] == cid)
