"""Which customer an identity belongs to, from identities.v1: the graph's merged and unmerged events
name the identities that moved (``moved_identities``) and every event its graph position (``gen``);
the projectors keep, per identity, the customer of its latest position (``rows.identity_owners``,
``rows.latest_owners``), whatever order the events of the six partitions are read in, duplicates
and late events included. Pure, no services."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings

from projectors.rows import (
    IDENTITY_EVENT,
    Batch,
    alias_op_applies,
    alias_ops,
    identity_owners,
    latest_owners,
    owner_supersedes,
)
from streams.identity import IdentityGraph, customer_id_for, identity_key
from tests.unit.streams.test_identity import T0, contact, graph_worlds, world_rules, world_steps

HANDLE, EMAIL = "social:twitter:sam", "email:sam@example.nl"


def sam(g: IdentityGraph) -> list[dict]:
    """Sam's tweet, an email from an address not seen yet, a chat carrying both (a merge), then an
    operator's unlink of the two (an unmerge): graph positions 1 to 4. Returns every event."""
    changes = [
        g.observe(contact("tweet", HANDLE, t=0), gen=1),
        g.observe(contact("mail", EMAIL, t=10), gen=2),
        g.observe(contact("chat", EMAIL, HANDLE, t=20), gen=3),
        g.unlink(EMAIL, HANDLE, command_id="op-1", at_ms=T0 + 30 * 60_000, gen=4),
    ]
    return [e for ch in changes for e in ch.events]


def owners(events: list[dict]) -> dict[str, str]:
    """identity key → customer, as a projector folds ``events`` in the order given."""
    kept: dict[tuple, tuple] = {}
    for e in events:
        for row in identity_owners(e):
            old = kept.get(row[:3])
            if old is None or owner_supersedes(row, old):
                kept[row[:3]] = row
    return {identity_key({"kind": k, "platform": p or None, "value": v}): row[3] for (k, p, v), row in kept.items()}


def test_a_merge_and_an_unmerge_name_the_identities_that_moved_with_both_customers_and_the_position():
    events = sam(IdentityGraph({}))
    survivor, split_off = customer_id_for("tweet"), customer_id_for("mail")
    email = {"kind": "email", "value": "sam@example.nl", "platform": None}
    [merged] = [e for e in events if e["event_type"] == "merged" and e["gen"] == 3]
    assert merged["customer_id"] == survivor and merged["related_customer_ids"] == [split_off]
    assert merged["moved_identities"] == [{**email, "from_customer_id": split_off, "to_customer_id": survivor}]
    [unmerged] = [e for e in events if e["event_type"] == "unmerged"]
    assert unmerged["customer_id"] == survivor and unmerged["gen"] == 4
    back = [{**email, "from_customer_id": survivor, "to_customer_id": split_off}]
    assert unmerged["moved_identities"] == back
    [split] = [e for e in events if e["event_type"] == "merged" and e["gen"] == 4]  # the split-off side
    assert split["customer_id"] == split_off and split["moved_identities"] == back
    assert all(e["moved_identities"] == [] for e in events if e["event_type"] in ("observed", "linked"))


def test_every_reading_order_of_sams_events_gives_each_identity_its_customer_after_the_unmerge():
    events = sam(IdentityGraph({}))
    want = {HANDLE: customer_id_for("tweet"), EMAIL: customer_id_for("mail")}
    for order in itertools.permutations(events):
        assert owners(list(order)) == want
    # a redelivered or late merge does not move the address back
    assert owners([*events, *[e for e in events if e["event_type"] == "merged"]]) == want


def test_an_event_without_a_position_says_nothing_about_owners_and_a_refusal_gives_nothing():
    events = sam(IdentityGraph({}))
    assert all(identity_owners({**e, "gen": None}) == [] for e in events)
    v1 = {k: v for k, v in events[0].items() if k not in ("gen", "moved_identities")}
    assert identity_owners(v1) == []
    rejected = {**events[0], "event_type": "link_rejected"}
    assert identity_owners(rejected) == []
    assert identity_owners(events[0]) == [("social", "twitter", "sam", customer_id_for("tweet"), 1)]


def test_the_batch_keeps_the_owners_its_identity_events_name_and_one_row_per_identity_the_latest():
    events = sam(IdentityGraph({}))
    batch = Batch()
    for i, e in enumerate(reversed(events)):
        batch.add(IDENTITY_EVENT, e, 0, i)
    latest = {r[:3]: r[3:] for r in latest_owners(batch.owners)}
    assert latest == {
        ("social", "twitter", "sam"): (customer_id_for("tweet"), 1),
        ("email", "", "sam@example.nl"): (customer_id_for("mail"), 4),
    }


def fold_aliases(ops) -> set[tuple[str, str]]:
    """The standing merge edges after ``ops`` in that order, as the store applies them."""
    state: dict[tuple[str, str], tuple[int, bool]] = {}
    for op in ops:
        edge = (op.absorbed, op.survivor)
        if alias_op_applies(op, state.get(edge)):
            state[edge] = (op.gen, op.action == "add")
    return {edge for edge, (_, active) in state.items() if active}


def test_a_merge_read_after_the_unmerge_that_undid_it_does_not_bring_the_merge_back():
    """The chat's events are sent again when the chat is redelivered to the graph: its merge then
    follows the unmerge on the survivor's partition. The later graph position wins."""
    events = sam(IdentityGraph({}))
    ops = [op for e in events for op in alias_ops(e)]
    assert [(op.action, op.gen) for op in ops] == [("add", 3), ("remove", 4)]  # the split side is no merge
    merge, unmerge = ops
    for order in ([merge, unmerge], [unmerge, merge], [merge, unmerge, merge], [unmerge, merge, unmerge, merge]):
        assert fold_aliases(order) == set()
    assert fold_aliases([merge]) == {(customer_id_for("mail"), customer_id_for("tweet"))}


def test_merges_and_unmerges_without_a_position_apply_in_the_order_read():
    events = [{k: v for k, v in e.items() if k != "gen"} for e in sam(IdentityGraph({}))]  # identities.v1 v1
    merge, unmerge = (op for e in events for op in alias_ops(e))
    assert merge.gen == unmerge.gen == 0
    assert fold_aliases([merge, unmerge]) == set()
    assert fold_aliases([unmerge, merge]) == {(merge.absorbed, merge.survivor)}
    # a position always wins over none
    later = replace(merge, gen=7)
    assert fold_aliases([later, unmerge]) == {(merge.absorbed, merge.survivor)}


@settings(max_examples=150, deadline=None)
@given(*graph_worlds)
def test_the_latest_position_of_each_identity_is_the_graphs_customer_in_any_reading_order(specs, rnd, hints, unlinks):
    """Contacts and unlinks (merges, unmerges, limits, hints) through the graph at positions 0, 1,
    ...; the events read back shuffled, with some again: every identity the graph gives a customer
    has that customer as its owner."""
    g = IdentityGraph({}, world_rules(hints))
    steps = world_steps(specs, unlinks)
    rnd.shuffle(steps)
    events: list[dict] = []
    for gen, (kind, item) in enumerate(steps):
        if kind == "c":
            events += g.observe(item, gen=gen).events
        else:
            events += g.unlink(*item, command_id=f"op-{gen}", at_ms=T0, gen=gen).events
    nodes = {key.removeprefix("n:") for key in g.store if key.startswith("n:") and not key.startswith("n:fact:")}
    want = {n: g.node_customer(n) for n in nodes if g.node_customer(n) is not None}
    read = events + [rnd.choice(events) for _ in range(min(3, len(events)))]
    rnd.shuffle(read)
    got = owners(read)
    assert {n: got.get(n) for n in want} == want
