"""The identity graph's cheaper rules (streams/identity.py) and the identity stage's table of it
(streams/identity_stage.py GraphTable): records parsed once and kept parsed, written back as JSON
once per batch, a contact of new identities without the full recomputation, ids with their
namespace hashed once; each with the answers and the stored JSON of the full path."""

from __future__ import annotations

import copy
import json
import uuid

import orjson

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.identity import (
    CUSTOMER_NS,
    IDENTITY_EVENT_NS,
    ContactRecord,
    IdentityGraph,
    NodeRecord,
    _key_again,
    _Uuid5,
    identity_key,
    parse_identity_key,
)
from streams.identity_runner import replay
from streams.identity_stage import GraphTable
from streams.rules import IdentityRules
from threadline.ids import uuid5_str

from .test_identity import GIULIA_DM, GIULIA_ORDER, GIULIA_TWEET, T0, contact, graph_worlds, world_rules, world_steps


class Table(dict):
    """The graph's changelog, its latest JSON value per key (``table.get``), counting the reads."""

    def __init__(self, *a):
        super().__init__(*a)
        self.reads: list[str] = []

    def get(self, key, default=None):
        self.reads.append(key)
        return super().get(key, default)


def recover(table: Table) -> GraphTable:
    """The graph's table as the runner rebuilds it from its changelog (``replay``): each key read
    once, its value serialized as the changelog holds it."""
    held = GraphTable("graph.changelog")
    replay([(orjson.dumps(key), orjson.dumps(table.get(key)), None) for key in list(table)], held)
    return held


def stage_batches(table: Table, graph: IdentityGraph, cache: GraphTable, batches, first: int = 0) -> list:
    """What the identity stage does with a graph on its table: each batch inside ``graph.batch``,
    then the changed records' JSON written to the changelog; graph positions from ``first`` on."""
    answers = []
    for steps in batches:
        with graph.batch():
            for kind, item in steps:
                if kind == "c":
                    answers.append(graph.observe(item, gen=first + len(answers)))
                else:
                    answers.append(graph.unlink(*item, command_id=f"{item}", at_ms=T0, gen=first + len(answers)))
        table.update(cache.take_dirty())
    return answers


def _summary(change) -> tuple:
    return change.customer_id, change.events, change.rekeyed, change.duplicate


@settings(max_examples=100, deadline=None)
@given(*graph_worlds)
def test_the_graph_on_its_cache_gives_the_answers_and_the_stored_json_of_the_graph_on_a_dict(
    specs, rnd, hints, unlinks
):
    rules = world_rules(hints)
    steps = world_steps(specs, unlinks)
    rnd.shuffle(steps)
    steps += steps[: len(steps) // 3]  # duplicates, in later batches
    plain = IdentityGraph({}, rules)
    want = [
        plain.observe(item, gen=i) if kind == "c" else plain.unlink(*item, command_id=f"{item}", at_ms=T0, gen=i)
        for i, (kind, item) in enumerate(copy.deepcopy(steps))
    ]
    table = Table()
    cache = GraphTable("graph.changelog")
    graph = IdentityGraph(cache, rules)
    cut = rnd.randrange(len(steps) + 1)
    got = stage_batches(table, graph, cache, [steps[:cut]])
    cache = recover(table)  # a rebalance between two batches: what is kept is read again
    graph = IdentityGraph(cache, rules)
    got += stage_batches(table, graph, cache, [steps[cut:]], first=cut)
    assert [_summary(c) for c in got] == [_summary(c) for c in want]
    assert dict(table) == plain.store


def count_parses(monkeypatch) -> list[str]:
    """The names of the record classes parsed from JSON from now on, one per parse."""
    parsed: list[str] = []
    for cls in (ContactRecord, NodeRecord):
        real = cls.from_json.__func__

        def counting(c, raw, real=real, name=cls.__name__):
            parsed.append(name)
            return real(c, raw)

        monkeypatch.setattr(cls, "from_json", classmethod(counting))
    return parsed


def test_a_record_is_read_and_parsed_once_while_the_cache_holds_it(monkeypatch):
    """Across batches the graph reads each stored record once and parses it once: it works on the
    parsed records the cache keeps (the JSON it writes is never read back)."""
    parsed = count_parses(monkeypatch)
    stored = IdentityGraph({})
    stored.observe(GIULIA_ORDER)  # a graph already in the table: the order, its three nodes
    table = Table(stored.store)
    parsed.clear()
    cache = recover(table)
    graph = IdentityGraph(cache)
    stage_batches(table, graph, cache, [[("c", GIULIA_TWEET)], [("c", GIULIA_DM)], [("c", GIULIA_ORDER)]])
    assert len(table.reads) == len(set(table.reads))
    assert sorted(parsed) == ["ContactRecord"] + ["NodeRecord"] * 3  # what was in the table before
    assert graph.customer_of("dm") == graph.customer_of("order") == stored.customer_of("order")


def test_a_batch_writes_each_changed_record_once_in_the_named_form():
    cache = GraphTable("graph.changelog")
    graph = IdentityGraph(cache)
    with graph.batch():
        graph.observe(contact("a", "email:a@example.com", t=1))
        graph.observe(contact("b", "email:a@example.com", "phone:+31611111111", t=0))  # re-keys a
    dirty = cache.take_dirty()
    assert sorted(dirty) == ["e:a", "e:b", "n:email:a@example.com", "n:phone:+31611111111"]
    assert dirty["e:a"] == ContactRecord.from_json(dirty["e:a"]).to_json()
    assert dirty["e:a"]["customer_id"] == dirty["e:b"]["customer_id"] == graph.customer_of("b")
    assert cache.take_dirty() == {}  # taken once


def test_a_recovery_drops_the_held_records_for_what_the_changelog_says():
    """A rebalance (the runner's revocation, then the partition assigned again) reads the table
    again from its changelog; the writes of a batch are taken before the partition can go (the
    runner takes them under the lock a revocation waits for)."""
    table = Table()
    cache = GraphTable("graph.changelog")
    graph = IdentityGraph(cache)
    graph.observe(contact("a", "email:a@example.com"))
    table.update(cache.take_dirty())
    graph.observe(contact("b", "phone:+31611111111"))  # changed, not yet taken
    table["n:email:a@example.com"] = NodeRecord(("a",), "someone-else").to_json()  # another owner wrote it
    assert graph.node_customer("email:a@example.com") != "someone-else"  # kept: not read again
    assert sorted(cache.take_dirty()) == ["e:b", "n:phone:+31611111111"]
    table.update({"e:b": None, "n:phone:+31611111111": None})  # that batch never acknowledged: not in the changelog
    cache.clear()
    replay([(orjson.dumps(k), orjson.dumps(v) if v is not None else None, None) for k, v in table.items()], cache)
    assert graph.node_customer("email:a@example.com") == "someone-else"
    assert graph.customer_of("b") is None and len(cache) == 2


def test_records_over_a_plain_mapping_are_kept_until_its_flush_only():
    """On a plain mapping the mapping stays the state: the next call reads it again."""
    store: dict = {}
    graph = IdentityGraph(store)
    graph.observe(contact("a", "email:a@example.com"))

    def customer_outside(customer_id: str) -> None:
        store["e:a"] = ContactRecord.from_json(store["e:a"]).with_customer(customer_id).to_json()

    customer_outside("changed-outside")
    assert graph.customer_of("a") == "changed-outside"
    customer_outside("changed-again")
    assert graph.observe(contact("a", "email:a@example.com")).customer_id == "changed-again"  # a duplicate


class FullGraph(IdentityGraph):
    """The graph that recomputes the region of every contact, new identities or not."""

    def _within_limits(self, nodes) -> bool:
        return False

    def _fresh(self, *args) -> None:
        raise AssertionError("not a contact of new identities within limits")


@settings(max_examples=100, deadline=None)
@given(*graph_worlds)
def test_a_contact_of_new_identities_gets_what_the_full_recomputation_gives(specs, rnd, hints, unlinks):
    """``IdentityGraph._fresh`` (a contact none of whose nodes the graph knew) answers and stores
    what ``_recompute`` does for the same contact."""
    rules = world_rules(hints)
    steps = world_steps(specs, unlinks)
    rnd.shuffle(steps)

    def run(graph: IdentityGraph) -> list:
        return [
            _summary(graph.observe(item, gen=i))
            if kind == "c"
            else _summary(graph.unlink(*item, command_id=f"{item}", at_ms=T0, gen=i))
            for i, (kind, item) in enumerate(copy.deepcopy(steps))
        ]

    fast, full = IdentityGraph({}, rules), FullGraph({}, rules)
    assert run(fast) == run(full)
    assert fast.store == full.store


def test_a_contact_over_a_limit_by_itself_is_recomputed_with_its_refusals():
    rules = IdentityRules(limits={"email": 1})
    g = IdentityGraph({}, rules)
    change = g.observe(contact("a", "email:a@example.com", "email:b@example.com", "phone:+31611111111"))
    assert [e["reason"] for e in change.events if e["event_type"] == "link_rejected"] == ["limit:email"]
    assert g.node_customer("email:b@example.com") != g.node_customer("email:a@example.com")


@given(st.text())
def test_the_event_ids_key_of_a_node_key_is_the_key_read_back(key):
    assert _key_again(key) == identity_key(parse_identity_key(key))


@given(st.sampled_from([CUSTOMER_NS, IDENTITY_EVENT_NS]), st.text())
def test_the_namespace_hashed_once_gives_uuid5(namespace, name):
    assert _Uuid5(namespace)(name) == uuid5_str(namespace, name) == str(uuid.uuid5(namespace, name))


def test_the_stored_json_text_is_the_named_form_with_arrays():
    """A record's JSON holds its tuples: serialized, the same text as the named form with lists
    (what the changelog held before, and what code before this change reads)."""
    g = IdentityGraph({})
    g.observe(GIULIA_ORDER)
    g.unlink("email:giulia.rossi@example.it", "fact:order_number:100234", command_id="op-1", at_ms=T0)
    node = g.store["n:email:giulia.rossi@example.it"]
    assert (
        orjson.dumps(node)
        == json.dumps(
            {"contacts": ["order"], "customer_id": g.customer_of("order"), "unlinked": ["fact:order_number:100234"]},
            separators=(",", ":"),
        ).encode()
    )
    stored = g.store["e:order"]
    as_lists = {**stored, "nodes": [list(n) for n in stored["nodes"]], "events": list(stored["events"])}
    assert orjson.dumps(stored) == orjson.dumps(as_lists)
    assert json.loads(orjson.dumps(stored))["nodes"] == [
        ["email:giulia.rossi@example.it", "email", "same_contact"],
        ["fact:order_number:100234", "fact", "shared_fact"],
        ["phone:+393471234567", "phone", "same_contact"],
    ]


def test_the_records_held_are_left_alone_by_the_garbage_collector_and_a_duplicate_gets_its_events_again():
    """The graph's table holds its records for good: as plain tuples the collector untracks
    (a named tuple it never does) and stops going over at every full collection."""
    import gc

    cache = GraphTable("graph.changelog")
    graph = IdentityGraph(cache)
    with graph.batch():
        first = [graph.observe(c) for c in (GIULIA_ORDER, GIULIA_TWEET, GIULIA_DM)]
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is: its inner tuples first
    assert cache.nodes and not any(gc.is_tracked(row) for row in cache.nodes.values())
    again = graph.observe(GIULIA_DM)
    assert again.duplicate and again.events == first[2].events and again.customer_id == first[2].customer_id
    assert all(type(v) is list for e in again.events for v in e.values() if isinstance(v, list | tuple))
