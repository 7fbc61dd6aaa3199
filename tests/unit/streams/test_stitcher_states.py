"""The states ``Stitcher`` takes and gives: a change leaves the caller's state as it was (the
conversations stage keeps a batch's states in memory and writes them once; a redelivery or a
failed batch starts again from the state it read), and the state it gives is plain JSON that reads
back the same (lists, not tuples: the next change in the same batch compares it with values that
came from the table)."""

from __future__ import annotations

import hashlib
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.conversations import RESOLUTION, Clock, Conversation, Stitcher, clock_keys, view
from streams.rules import StitchRules
from tests.unit.streams.test_event_time import HOUR, T0, contact, journeys

# a conversation resolved half a day before the watermark freezes: journeys span four days, so
# conversations freeze and late contacts are archived into frozen ones
RULES = StitchRules(retention_seconds=12 * 3600, reopen_seconds=3600)


def _with_facts(op: tuple) -> tuple:
    """A contact with an order number and a language (facts the state keeps once frozen)."""
    if op[0] != "add":
        return op
    _, record, gen = op
    n = int(record["event_id"][1:])
    fact = {"kind": "order_number", "value": f"o-{n % 3}", "source": "text"}
    return ("add", {**record, "facts": [fact], "language": ("en", "it")[n % 2]}, gen)


def _call(s: Stitcher, state: dict | None, op: tuple, wm: int | None) -> tuple[dict, list[dict]]:
    if op[0] == "add":
        _, record, gen = op
        return s.apply(state, record, wm=wm, gen=gen)
    if op[0] == "rm":
        _, _cust, ids, to, gen = op
        return s.remove(state, ids, to, gen=gen, wm=wm)
    assert state is not None
    return s.advance(state, op[1])


def _customer(op: tuple) -> str:
    return op[1]["customer_id"] if op[0] == "add" else op[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journeys(), st.randoms(use_true_random=False), st.integers(0, 4))
def test_a_change_leaves_the_callers_state_as_it_was_and_gives_plain_json(journey, rnd, dups):
    _records, ops, _owner = journey
    ops = [_with_facts(op) for op in ops]
    ops += [rnd.choice(ops) for _ in range(dups)]  # redeliveries: the outbox answers
    rnd.shuffle(ops)
    s = Stitcher(RULES)
    states: dict[str, dict] = {}
    wm = None
    steps: list[tuple] = []
    for op in ops:
        if op[0] == "add":
            wm = max(wm or op[1]["occurred_at"], op[1]["occurred_at"])
        steps.append(op)
        if rnd.random() < 0.3:  # the timer, now and then, a little past the watermark
            steps += [("tick", wm + HOUR, cust) for cust in sorted(states)]
    steps += [("tick", (wm or 0) + 3 * 24 * HOUR, cust) for cust in sorted({_customer(o) for o in ops})]
    for op in steps:
        cust = op[2] if op[0] == "tick" else _customer(op)
        before = states.get(cust)
        if op[0] == "tick" and before is None:
            continue
        seen = orjson.dumps(before)
        new, _events = _call(s, before, op, op[1] if op[0] == "tick" else wm)
        if op[0] == "rm":
            new["customer_id"] = cust
        assert orjson.dumps(before) == seen, f"{op[0]} changed the state it was given"
        assert new == orjson.loads(orjson.dumps(new)), f"{op[0]} gave a state that does not read back the same"
        states[cust] = new


def test_an_archived_late_contact_leaves_the_frozen_summary_of_the_callers_state_alone():
    rules = StitchRules(retention_seconds=24 * 3600)
    s = Stitcher(rules)
    state = None
    for c in [contact("q", "chat", 0), contact("n", "chat", 4 * 24 * HOUR)]:
        state, _ = s.apply(state, c, wm=c["occurred_at"])
    assert state is not None and [f["n"] for f in state["frozen"]] == [1]
    seen = orjson.dumps(state)
    later, out = s.apply(state, contact("late", "chat", -60_000), wm=state["wm"])
    assert [e["event_type"] for e in out] == ["message_appended"] and later["frozen"][0]["n"] == 2
    assert orjson.dumps(state) == seen


def _seeded_batch(seed: int = 11, n: int = 400) -> list[tuple]:
    """Contacts of 40 customers over six days, some arriving hours late, with replies, call ids,
    resolutions, facts and languages; a few identity moves; the timer now and then."""
    rnd = random.Random(seed)
    channels = ("chat", "email", "twitter", "voice", "sms", "store", "whatsapp")
    records: list[dict] = []
    for i in range(n):
        eid = f"s{i:03d}"
        at = i * 20 * 60_000 + rnd.choice([0, 0, 0, -rnd.randrange(1, 12) * HOUR])  # some late
        thread: dict = {"message_id": f"<{eid}>"}
        if records and rnd.random() < 0.3:
            thread["in_reply_to"] = f"<{rnd.choice(records)['event_id']}>"
        if rnd.random() < 0.1:
            thread["call_id"] = f"CA{rnd.randrange(5)}"
        c = contact(eid, rnd.choice(channels), at, cust=f"c{rnd.randrange(40)}", thread=thread)
        kind = rnd.choice(["customer", "customer", "agent", "resolve"])
        if kind != "customer":
            c |= {"direction": "outbound", "actor": {"role": "agent"}}
            c["event_type"] = "conversation.resolved" if kind == "resolve" else "contact.received"
        c["facts"] = [{"kind": "order_number", "value": f"o{rnd.randrange(30)}", "source": "text"}]
        c["language"] = rnd.choice(["en", "it", None])
        records.append(c)
    ops: list[tuple] = []
    owner = {r["event_id"]: r["customer_id"] for r in records}
    for gen, r in enumerate(records, start=1):
        ops.append(("add", {**r, "customer_id": owner[r["event_id"]]}, gen))
        if rnd.random() < 0.02:  # identity merges one customer into another
            src, dst = f"c{rnd.randrange(40)}", f"c{rnd.randrange(40)}"
            moving = sorted(e for e, c in owner.items() if c == src and e <= r["event_id"])
            if src != dst and moving:
                ops.append(("rm", src, moving, dst, gen))
                for e in moving:
                    owner[e] = dst
                    ops.append(("add", {**next(x for x in records if x["event_id"] == e), "customer_id": dst}, gen))
        if rnd.random() < 0.05:
            ops.append(rnd.choice(ops))  # a redelivery
    return ops


def _digest(ops: list[tuple], rules: StitchRules) -> str:
    s = Stitcher(rules)
    states: dict[str, dict] = {}
    digest = hashlib.sha256()
    wm = None
    for i, op in enumerate(ops):
        cust = _customer(op)
        if op[0] == "add":
            wm = max(wm or op[1]["occurred_at"], op[1]["occurred_at"])
        states[cust], events = _call(s, states.get(cust), op, wm)
        if op[0] == "rm":
            states[cust]["customer_id"] = cust
        digest.update(orjson.dumps(events))
        if i % 25 == 24 and wm is not None:  # the timer
            for c in sorted(states):
                if (s.next_deadline(states[c]) or wm) < wm:
                    states[c], events = s.advance(states[c], wm)
                    digest.update(orjson.dumps(events))
    for c in sorted(states):
        states[c], events = s.advance(states[c], (wm or 0) + 40 * 24 * HOUR)
        digest.update(orjson.dumps(events))
    digest.update(orjson.dumps({c: _outbox_parsed(st) for c, st in states.items()}))
    return digest.hexdigest()


def _outbox_parsed(state: dict) -> dict:
    """The state with its outbox entries as JSON values (kept as their JSON text since the digests
    were frozen): the same content, whichever form the entries are kept in."""
    entries = {k: orjson.loads(v) if isinstance(v, str) else v for k, v in state["outbox"].items()}
    return {**state, "outbox": entries}


def test_a_seeded_batch_gives_the_events_and_states_it_always_gave():
    """Every event (each field, the order, the ids) and every state, byte for byte, as the rules
    gave them before they were made cheaper: a change of the rules' output shows here first."""
    ops = _seeded_batch()
    assert _digest(ops, StitchRules()) == FROZEN["default"]
    assert _digest(ops, RULES) == FROZEN["short retention"]


FROZEN = {
    "default": "a18dbcd53542a98eff1be8080a3248a038c639896ad9f17e3b271f0e627e4b08",
    "short retention": "74cbcd492bd23a8ba775a577fd291ea9d5fec934cbdf73826ce8855d9e58ad8a",
}


def test_a_withdrawn_second_clock_of_a_start_ends_with_the_event_of_the_clock_that_stands():
    """Two clocks of one kind and start were published (``resolution:T`` running and
    ``resolution:T#2`` breached); a late contact took the second away and the first did not
    change. The withdrawal names (kind, start) too, so the clock that stands is announced again
    after it, even though nothing of it changed (the re-send the rules skip only when no clock
    was withdrawn and every clock has a kind and start of its own)."""
    t = T0
    hello = view(contact("hello", "chat", 0))
    clock = Clock(RESOLUTION, 86_400, t, since=t)
    conv = Conversation("conv", "cust-1", contacts=["hello"], opened_at=t, last_at=t, channel="chat", clocks=[clock])
    s = Stitcher()
    p = s._unpublished(conv) | {
        "k": {f"resolution:{t}": ["running", None, 86_400], f"resolution:{t}#2": ["breached", t + HOUR, 86_400]}
    }
    out = s._clock_changes(conv, p, {"hello": hello}, clock_keys(conv.clocks))
    assert [(e[0], e[1]) for e in out] == [("sla_withdrawn", f"resolution:{t}#2"), ("sla_started", f"resolution:{t}")]
    assert out[-1][3] == hello and out[-1][4]["clock"] is clock
