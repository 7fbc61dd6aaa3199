"""The states ``Stitcher`` takes and gives: a change leaves the caller's state as it was (the
conversations stage keeps a batch's states in memory and writes them once; a redelivery or a
failed batch starts again from the state it read), and the state it gives is plain JSON that reads
back the same (lists, not tuples: the next change in the same batch compares it with values that
came from the table)."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.conversations import Stitcher
from streams.rules import StitchRules
from tests.unit.streams.test_event_time import HOUR, contact, journeys

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
