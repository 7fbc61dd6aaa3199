"""Identity resolution: an identity graph over channel identities (pure rules, no I/O).

The graph
---------
Nodes are channel identities (``email:giulia@…``, ``phone:+39…``, ``social:twitter:giulia_r``,
``account:shop:A-1``, ``chat_visitor:v-1`` …) and linking facts (``fact:order_number:100234``).
Each contact is evidence: it ties its *anchor* (its strongest identity by kind priority)
to every other node it carries. Rules, each configurable (``streams.rules.IdentityRules``):

* ``same_contact`` — identities carried together by one contact (a chat visitor who logs in
  with an email, a WhatsApp message with its phone, a web order with email and phone);
* ``shared_fact`` — an order or account number given on one channel that is known under another
  identity (Giulia's DM gives the order number of an order placed with her email and phone);
* ``hint`` — identities of strength ``hint`` (a phone number in an email signature): off by
  default (``THREADLINE_IDENTITY_HINT_LINKS=1`` turns it on, weakest of all links).

Guardrails: blocked values (``noreply@``, ``0000000000``, ``unknown`` …) never become nodes; a
limit per identity kind per customer (a shared family phone must not merge ten people); and a
priority of kinds that decides which link is dropped when a limit is hit. A dropped link is a
``link_rejected`` event with its reason. An operator's ``unlink`` withdraws the link between two
identities for good: they may never again be in one customer.

Determinism and order independence
----------------------------------
Customers are a pure function of the *set* of evidence, never of arrival order. When a contact
(or an unlink) arrives, the connected *region* around it (every node reachable over any evidence
edge) is recomputed canonically: edges sorted by (rule, kind priority, event time, event id,
node), added one by one with union-find unless a guardrail rejects them. A customer's id is
UUIDv5 of the event id of its earliest contact (event time, then event id), so it is stable as a
customer grows and the same whatever the arrival order. Comparing the region's assignment
before and after gives the events: ``observed`` (a new customer), ``linked`` (new identities on a
customer), ``merged`` (two customers became one; the survivor is the one whose first contact is
earliest), ``unmerged`` (a customer was split), and ``rekeyed`` past contacts whose customer changed.
A ``merged`` or ``unmerged`` event names the identities that moved (``moved_identities``: each with
the customer it left and the one it joined), and every event carries the graph position of the
change (``gen``, the offset of its record on the graph topic), so a reader can tell which customer
holds an identity now whatever order it reads the events in: the one of its latest position.

Correct across partitions: one writer per customer
--------------------------------------------------
contacts.v1 is keyed by the primary identity, so two identities of one customer usually sit on
different partitions, and the graph component that joins them can span every partition. The
graph is therefore one keyed state with a single writer: the ``route`` agent (every worker, all
six contacts.v1 partitions) decodes, sends undecodable records to the DLQ and forwards each
contact to the one-partition ``streams.identity-graph.v1`` topic; the identity stage that owns
that partition (exactly one worker at a time, by its consumer group's assignment;
``streams.identity_runner``) updates the graph (changelog ``streams.identity-graph.changelog.v1``,
one partition like its source) and writes identities.v1 and contacts.resolved.v1 keyed by
customer_id. Everything after that is keyed by customer_id: each customer's conversation state
has exactly one writer, the worker that owns that customer's partition of contacts.resolved.v1.
The graph step is a few dictionary look-ups per contact; the work that scales with conversations
(stitching, SLA clocks, timers) is spread over the six customer partitions and every worker.

Storage: ``IdentityGraph`` works on any mutable mapping of JSON values (a dict in tests), or on
a ``GraphRecords`` of parsed records (the identity stage's ``GraphTable``, the whole graph held in
the worker); every change is a reassignment, so a table's changelog sees it. Two records:
``e:<event id>`` a ``ContactRecord`` (what the graph keeps of a contact) and ``n:<node key>`` a
``NodeRecord``. Both are stored by field name; the form with one-letter keys written before
(``t``, ``a``, ``n``, ``cust``, ``out``; ``c``, ``cust``, ``x``) is still read, and a record read
in that form is written back in the named form the next time it changes. A record's JSON gives
its arrays as the record's tuples (the same JSON text; fewer objects for a dict to hold).

Cost: the graph reads and writes parsed records (``GraphRecords``): each is parsed once when read
and written as JSON once per contact (per batch in ``IdentityGraph.batch``); the identity stage's
``GraphTable`` holds them parsed for good, the JSON made only for its changelog. A contact none of
whose identities the graph knew, within every limit (most contacts of a new customer), gets what
the canonical recomputation would give without computing it (``IdentityGraph._fresh``,
property-tested against the full path).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from schemas.identities import is_placeholder
from schemas.privacy import is_blocked_pseudonym
from streams.rules import IdentityRules
from threadline.ids import VARIANT_DIGIT

CUSTOMER_NS = uuid.UUID("0c6f8a52-3f5e-5b7d-8e21-4d9a6b1c2e3f")
IDENTITY_EVENT_NS = uuid.UUID("7d1e4a9b-2c3f-5a6e-8b1d-9f0e2c4a6b8d")

SAME_CONTACT, SHARED_FACT, HINT = "same_contact", "shared_fact", "hint"
RULE_RANK = {SAME_CONTACT: 0, SHARED_FACT: 1, HINT: 2}


def identity_key(identity: dict) -> str:
    platform = f"{identity['platform']}:" if identity.get("platform") else ""
    return f"{identity['kind']}:{platform}{identity['value']}"


def fact_key(fact: dict) -> str:
    return f"fact:{fact['kind']}:{fact['value'].strip().lower()}"


def parse_identity_key(key: str) -> dict:
    """``kind:[platform:]value`` back to an identity record (the inverse of ``identity_key``)."""
    kind, _, rest = key.partition(":")
    if kind in ("social", "account") and rest.count(":") >= 1:
        platform, _, value = rest.partition(":")
        return {"kind": kind, "value": value, "platform": platform}
    return {"kind": kind, "value": rest, "platform": None}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def to_millis(t) -> int:
    """Milliseconds since the epoch of a datetime (a naive one read as UTC), in integers: a float
    timestamp times 1000 is one millisecond short for ~0.6% of millisecond times; an int as it is."""
    if isinstance(t, datetime):
        return ((t if t.tzinfo is not None else t.replace(tzinfo=UTC)) - _EPOCH) // _MILLISECOND
    return int(t)


def blocked(identity: dict, rules: IdentityRules) -> bool:
    """A placeholder value that must never link anyone (``schemas.identities.is_placeholder``).
    With privacy on the worker sees pseudonyms: the sealing writer gave a placeholder a pseudonym
    of its own shape (``schemas.privacy.is_blocked_pseudonym``), so it is refused all the same."""
    value = identity["value"]
    return is_blocked_pseudonym(value) or is_placeholder(identity["kind"], value, rules.blocked_values)


class Evidence(NamedTuple):
    """What the graph keeps of one contact: its time, anchor and nodes."""

    event_id: str
    occurred_ms: int
    anchor: str | None
    nodes: tuple[tuple[str, str, str], ...]  # (node key, kind, rule)
    rejected: tuple[tuple[str, str], ...]  # (identity key, reason) refused before linking


def evidence(contact: dict, rules: IdentityRules) -> Evidence:
    """The contact's nodes after the blocked-value and hint rules, and its anchor."""
    idents = contact.get("identities") or []
    if not idents:
        raise ValueError("a contact without identities cannot be resolved")
    nodes: dict[str, tuple[str, str, str]] = {}
    rejected = []
    primary_key = None
    for ident in idents:
        key = identity_key(ident)
        if blocked(ident, rules):
            rejected.append((key, "blocked_value"))
            continue
        if ident.get("strength") == "hint":
            if not rules.hint_links:
                continue
            rule = HINT
        else:
            rule = SAME_CONTACT
        if key not in nodes or RULE_RANK[rule] < RULE_RANK[nodes[key][2]]:
            nodes[key] = (key, ident["kind"], rule)
        if ident.get("primary") and rule != HINT:
            primary_key = key
    for fact in contact.get("facts") or []:
        if fact["kind"] in rules.link_fact_kinds and not (
            is_blocked_pseudonym(fact["value"]) or fact["value"].strip().lower() in rules.blocked_values
        ):
            key = fact_key(fact)
            nodes.setdefault(key, (key, "fact", SHARED_FACT))
    # The anchor is the strongest identity by kind priority (the primary breaks ties), so when a
    # limit refuses a link it is the weaker identity that is left out, never the contact.
    usable = [n for n in nodes.values() if n[1] != "fact" and n[2] != HINT]
    if len(usable) == 1:
        anchor: str | None = usable[0][0]
    elif usable:
        anchor = min(usable, key=lambda n: (rules.rank(n[1]), n[0] != primary_key, n[0]))[0]
    else:
        anchor = None
    return Evidence(
        contact["event_id"],
        to_millis(contact["occurred_at"]),
        anchor,
        tuple(sorted(nodes.values())) if len(nodes) > 1 else tuple(nodes.values()),
        tuple(sorted(rejected)) if rejected else (),
    )


def customer_id_for(anchor_event_id: str) -> str:
    return _customer_uuid(anchor_event_id)


def isolated_customer_id(event_id: str) -> str:
    """The customer of a contact with no usable identity at all (every one blocked)."""
    return _customer_uuid(f"contact:{event_id}")


def moved_identities(
    old: Mapping[str, str | None], new: Mapping[str, str | None], *, to: str | None = None, origin: str | None = None
) -> list[dict]:
    """The identities (fact nodes left out) whose customer went from one to another between the
    assignments ``old`` and ``new`` of a region: those that moved into ``to``, or out of ``origin``;
    each with both customers, sorted by node key (identities.v1 v2: ``moved_identities``)."""
    out = []
    for k in sorted(new):
        was, now = old.get(k), new[k]
        if was is None or now is None or was == now or k.startswith("fact:"):
            continue
        if (to is None or now == to) and (origin is None or was == origin):
            out.append({**parse_identity_key(k), "from_customer_id": was, "to_customer_id": now})
    return out


@dataclass
class Change:
    """What one contact or command did to the graph."""

    customer_id: str | None
    events: list[dict] = field(default_factory=list)  # identities.v1 records
    rekeyed: list[tuple[str, str, str]] = field(default_factory=list)  # (event_id, new, old customer)
    duplicate: bool = False


class ContactRecord(NamedTuple):
    """What the graph stores of one contact (``e:<event id>``). A named tuple, made and read several
    times per contact; ``GraphRecords`` holds it as its row, a plain tuple (``_as_contact``)."""

    occurred_ms: int
    anchor: str | None  # its strongest identity; None when every one was blocked
    nodes: tuple[tuple[str, str, str], ...]  # (node key, kind, rule)
    customer_id: str | None = None
    events: tuple[dict, ...] = ()  # the identities.v1 records it caused: a duplicate gets them again

    def with_customer(self, customer_id: str | None) -> ContactRecord:
        return ContactRecord(self.occurred_ms, self.anchor, self.nodes, customer_id, self.events)

    def to_json(self) -> dict:
        return {
            "occurred_ms": self.occurred_ms,
            "anchor": self.anchor,
            "nodes": self.nodes,
            "customer_id": self.customer_id,
            "events": self.events,
        }

    @classmethod
    def from_json(cls, raw: Mapping) -> ContactRecord:
        if "t" in raw:  # the form with one-letter keys
            return cls(raw["t"], raw["a"], _node_triples(raw["n"]), raw["cust"], tuple(raw.get("out", ())))
        return cls(
            raw["occurred_ms"], raw["anchor"], _node_triples(raw["nodes"]), raw["customer_id"], tuple(raw["events"])
        )


class NodeRecord(NamedTuple):
    """What the graph stores of one node (``n:<node key>``)."""

    contacts: tuple[str, ...] = ()  # the event ids of the contacts that carry it, in arrival order
    customer_id: str | None = None
    unlinked: tuple[str, ...] = ()  # nodes an operator unlinked from this one, for good (sorted)

    def with_customer(self, customer_id: str | None) -> NodeRecord:
        return NodeRecord(self.contacts, customer_id, self.unlinked)

    def to_json(self) -> dict:
        return {"contacts": self.contacts, "customer_id": self.customer_id, "unlinked": self.unlinked}

    @classmethod
    def from_json(cls, raw: Mapping) -> NodeRecord:
        if "c" in raw:  # the form with one-letter keys
            return cls(tuple(raw["c"]), raw["cust"], tuple(raw.get("x", ())))
        return cls(tuple(raw["contacts"]), raw["customer_id"], tuple(raw["unlinked"]))


def _node_triples(raw: list) -> tuple[tuple[str, str, str], ...]:
    return tuple(map(tuple, raw))  # JSON lists of (node key, kind, rule)


class _UnionFind:
    def __init__(self, kinds: dict[str, str], withdrawn: dict[str, set[str]]):
        self.parent = {k: k for k in kinds}
        self.members = {k: [k] for k in kinds}
        self.counts = {k: {kind: 1} for k, kind in kinds.items()}
        self.withdrawn = withdrawn

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def refusal(self, a: str, b: str, limits) -> str | None:
        if len(self.members[a]) > len(self.members[b]):
            a, b = b, a
        if self.withdrawn:  # an operator's unlinks in the region: none in most regions
            for x in self.members[a]:
                for y in self.withdrawn.get(x, ()):
                    if y in self.parent and self.find(y) == b:
                        return "unlinked_by_operator"
        for kind, n in self.counts[a].items():
            limit = limits.get(kind)
            if limit is not None and n + self.counts[b].get(kind, 0) > limit:
                return f"limit:{kind}"
        return None

    def union(self, a: str, b: str) -> None:
        if len(self.members[a]) < len(self.members[b]):
            a, b = b, a
        self.parent[b] = a
        self.members[a] += self.members.pop(b)
        for kind, n in self.counts.pop(b).items():
            self.counts[a][kind] = self.counts[a].get(kind, 0) + n


_ABSENT = object()
# A record from the row (a plain tuple of its fields) the graph's records keep it as: a named tuple
# is a tuple subclass, which the garbage collector never untracks; a plain tuple of strings, numbers
# and plain tuples it untracks at its first collection.
_as_contact = cast(Callable[[Any], ContactRecord], functools.partial(tuple.__new__, ContactRecord))
_as_node = cast(Callable[[Any], NodeRecord], functools.partial(tuple.__new__, NodeRecord))


class GraphRecords:
    """The graph's records, parsed, over a mapping of their JSON values (``e:<event id>``:
    ``ContactRecord``, ``n:<node key>``: ``NodeRecord``).

    A record is parsed from its JSON the first time it is read and then kept, absences included; a
    write replaces the kept record and marks its key changed; ``flush`` writes each changed
    record's JSON to the mapping once (a contact is written once per contact, or once per batch in
    ``IdentityGraph.batch``, however many steps changed it). The kept records are what the mapping
    holds as long as the graph is its only writer; ``forget`` drops them, and a flush drops them
    past ``limit``. The identity stage's ``GraphTable`` is one without a mapping: the records it
    holds are the whole graph."""

    def __init__(self, store: MutableMapping | None = None, limit: int = 200_000):
        self.base = store
        self.limit = limit
        # records by event id and node key, each kept as its row (a plain tuple: ``_as_contact``)
        self.contacts: dict[str, tuple | None] = {}
        self.nodes: dict[str, tuple | None] = {}
        self.changed: dict[str, None] = {}  # stored keys, in the order of their first change
        self.customer_ids: dict[str, str] = {}  # event id -> customer_id_for(event id)

    def _load(self, key: str):
        """The stored JSON of ``key``, None when absent."""
        assert self.base is not None
        return self.base.get(key)

    def contact(self, event_id: str) -> ContactRecord | None:
        rec = self.contacts.get(event_id, _ABSENT)
        if rec is _ABSENT:
            raw = self._load("e:" + event_id)
            rec = self.contacts[event_id] = None if raw is None else tuple(ContactRecord.from_json(raw))
        return None if rec is None else _as_contact(rec)

    def node(self, key: str) -> NodeRecord | None:
        rec = self.nodes.get(key, _ABSENT)
        if rec is _ABSENT:
            raw = self._load("n:" + key)
            rec = self.nodes[key] = None if raw is None else tuple(NodeRecord.from_json(raw))
        return None if rec is None else _as_node(rec)

    def put_contact(self, event_id: str, record: ContactRecord) -> None:
        self.contacts[event_id] = tuple(record)
        self.changed["e:" + event_id] = None

    def put_node(self, key: str, record: NodeRecord) -> None:
        self.nodes[key] = tuple(record)
        self.changed["n:" + key] = None

    def customer_id(self, event_id: str) -> str:
        cid = self.customer_ids.get(event_id)
        if cid is None:
            cid = self.customer_ids[event_id] = customer_id_for(event_id)
        return cid

    def value(self, key: str):
        """The JSON of the record at stored key ``key`` (named form), None when absent."""
        kind, _, rest = key.partition(":")
        rec: ContactRecord | NodeRecord | None
        if kind == "e":
            rec = self.contact(rest)
        elif kind == "n":
            rec = self.node(rest)
        else:
            return self._load(key)
        return None if rec is None else rec.to_json()

    def put_value(self, key: str, value) -> None:
        """Store the JSON ``value`` (either form) at stored key ``key``."""
        kind, _, rest = key.partition(":")
        if kind == "e":
            self.put_contact(rest, ContactRecord.from_json(value))
        elif kind == "n":
            self.put_node(rest, NodeRecord.from_json(value))
        else:
            raise KeyError(f"not a graph record key: {key!r}")

    def take_changed(self) -> dict:
        """The JSON of every record changed since the last call, by stored key (``to_json`` of
        each, made from the rows held: a changed record is held until taken)."""
        changed, self.changed = self.changed, {}
        contacts, nodes = self.contacts, self.nodes
        out = {}
        for key in changed:
            row = (contacts if key[0] == "e" else nodes).get(key[2:])
            if row is None:  # not held (never so for a record the graph wrote): as ``value`` reads it
                out[key] = self.value(key)
            elif key[0] == "e":
                out[key] = {
                    "occurred_ms": row[0],
                    "anchor": row[1],
                    "nodes": row[2],
                    "customer_id": row[3],
                    "events": row[4],
                }
            else:
                out[key] = {"contacts": row[0], "customer_id": row[1], "unlinked": row[2]}
        return out

    def flush(self) -> None:
        base = self.base
        assert base is not None
        if self.changed:
            value = self.value
            for key in self.changed:
                base[key] = value(key)
            self.changed = {}
        if len(self.contacts) + len(self.nodes) > self.limit:
            self.forget()

    def forget(self) -> None:
        """Drop the kept records (those changed and not yet taken stay)."""
        keep = self.changed
        self.contacts = {k: r for k, r in self.contacts.items() if "e:" + k in keep} if keep else {}
        self.nodes = {k: r for k, r in self.nodes.items() if "n:" + k in keep} if keep else {}
        self.customer_ids = {}


class IdentityGraph:
    """The identity graph on a mapping: ``n:<node>`` node records, ``e:<event id>`` evidence
    (``NodeRecord`` and ``ContactRecord``, stored as JSON), read and written through
    ``GraphRecords`` (or the store itself when it is one)."""

    def __init__(self, store: MutableMapping | GraphRecords, rules: IdentityRules | None = None):
        self.store = store
        # A plain mapping's parsed records are kept until the next flush only (limit 0): the
        # mapping stays the state, read again by the next contact outside a batch.
        self._db = store if isinstance(store, GraphRecords) else GraphRecords(store, limit=0)
        self.rules = rules or IdentityRules()
        self._holding = False
        self._ranks: dict[str, int] = {}

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Keep the writes of every contact and command inside until the end, then write each
        changed record once (a batch's changelog gets one record per changed key)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self._db.flush()

    def _flush(self) -> None:
        if not self._holding:
            self._db.flush()

    def _rank(self, kind: str) -> int:
        r = self._ranks.get(kind)
        if r is None:
            r = self._ranks[kind] = self.rules.rank(kind)
        return r

    # -- reading ---------------------------------------------------------------------------

    def customer_of(self, event_id: str) -> str | None:
        try:
            ev = self._db.contact(event_id)
            return ev.customer_id if ev else None
        finally:
            self._flush()  # on a plain mapping, nothing kept past the call

    def node_customer(self, key: str) -> str | None:
        try:
            rec = self._db.node(key)
            return rec.customer_id if rec else None
        finally:
            self._flush()

    # -- writing ---------------------------------------------------------------------------

    def observe(self, contact: dict, *, gen: int | None = None) -> Change:
        """Add one contact's evidence; its customer, the graph events and the re-keyed contacts.
        ``gen``: the graph's position of the contact (its offset on the graph topic), carried by
        the events it causes (a duplicate gets the events of the first time, position included)."""
        try:
            return self._observe(contact, gen)
        finally:
            self._flush()

    def _observe(self, contact: dict, gen: int | None) -> Change:
        db = self._db
        eid = contact["event_id"]
        known = db.contact(eid)
        if known is not None:  # a duplicate: nothing changes, the same answer again
            return Change(known.customer_id, list(known.events), [], duplicate=True)
        ev = evidence(contact, self.rules)
        times = (ev.occurred_ms, to_millis(contact.get("recorded_at") or contact["occurred_at"]))
        db.put_contact(eid, ContactRecord(ev.occurred_ms, ev.anchor, ev.nodes))
        known_nodes = [db.node(key) for key, _kind, _rule in ev.nodes]
        change = Change(None)
        if ev.anchor is None:
            for (key, _kind, _rule), rec in zip(ev.nodes, known_nodes, strict=True):
                db.put_node(key, _with_contact(rec, eid))
            change.customer_id = isolated_customer_id(eid)
        elif not any(known_nodes) and self._within_limits(ev.nodes):
            self._fresh(eid, ev, change, times, gen)
        else:
            for (key, _kind, _rule), rec in zip(ev.nodes, known_nodes, strict=True):
                db.put_node(key, _with_contact(rec, eid))
            self._recompute([n[0] for n in ev.nodes], change, source=eid, times=times, gen=gen)
            change.customer_id = db.contact(eid).customer_id  # type: ignore[union-attr]
        for key, reason in ev.rejected:
            change.events.append(
                self._event(
                    "link_rejected",
                    change.customer_id,
                    times,
                    source=eid,
                    identities=[key],
                    rule="guardrail",
                    reason=reason,
                    gen=gen,
                )
            )
        if change.rekeyed:
            change.rekeyed = [r for r in change.rekeyed if r[0] != eid]
        done = db.contact(eid)
        assert done is not None
        db.put_contact(
            eid, ContactRecord(done.occurred_ms, done.anchor, done.nodes, change.customer_id, tuple(change.events))
        )
        return change

    def _within_limits(self, nodes: tuple[tuple[str, str, str], ...]) -> bool:
        """Whether the nodes of each kind are no more than that kind's limit."""
        limits = self.rules.limits
        if len(nodes) == 1:
            return limits.get(nodes[0][1], 1) >= 1
        counts: dict[str, int] = {}
        for _key, kind, _rule in nodes:
            counts[kind] = counts.get(kind, 0) + 1
        return all(n <= limits.get(kind, n) for kind, n in counts.items())

    def _fresh(self, eid: str, ev: Evidence, change: Change, times: tuple[int, int], gen: int | None) -> None:
        """A contact none of whose nodes the graph knew, within every limit: its region is itself and
        no guardrail can refuse one of its links (no unlink names a node without a record; no
        kind is over its limit even all together), so the canonical recomputation links every
        node to its anchor: one new customer, named by this contact, and one ``observed`` event
        naming its identities. What ``_recompute`` gives for that region, without computing it."""
        cust = self._db.customer_id(eid)
        put_node = self._db.put_node
        for key, _kind, _rule in ev.nodes:
            put_node(key, NodeRecord((eid,), cust))
        used = sorted({rule for key, _kind, rule in ev.nodes if key != ev.anchor})
        keys = [n[0] for n in ev.nodes]  # sorted: the nodes are
        change.events.append(
            self._event("observed", cust, times, source=eid, identities=keys, rule=",".join(used) or None, gen=gen)
        )
        change.customer_id = cust

    def unlink(self, a: str, b: str, command_id: str, at_ms: int, *, gen: int | None = None) -> Change:
        """Withdraw the link between identities ``a`` and ``b`` (node keys): they are never one
        customer again. Splits the customer they share, if any. ``gen``: the command's graph position."""
        try:
            return self._unlink(a, b, command_id, at_ms, gen)
        finally:
            self._flush()

    def _unlink(self, a: str, b: str, command_id: str, at_ms: int, gen: int | None) -> Change:
        if a == b:
            raise ValueError("an identity cannot be unlinked from itself")
        for x, y in ((a, b), (b, a)):
            rec = self._db.node(x) or NodeRecord()
            if y not in rec.unlinked:
                self._db.put_node(x, NodeRecord(rec.contacts, rec.customer_id, tuple(sorted([*rec.unlinked, y]))))
        change = Change(None)
        self._recompute([a, b], change, source=command_id, times=(at_ms, at_ms), reason="unlinked_by_operator", gen=gen)
        return change

    # -- the canonical recomputation ---------------------------------------------------------

    def _region(self, start: list[str]) -> tuple[dict[str, NodeRecord], dict[str, ContactRecord]]:
        node, contact = self._db.node, self._db.contact
        nodes: dict[str, NodeRecord] = {}
        contacts: dict[str, ContactRecord] = {}
        todo = list(start)
        while todo:
            key = todo.pop()
            if key in nodes:
                continue
            rec = node(key)
            if rec is None:
                continue
            nodes[key] = rec
            for eid in rec.contacts:
                if eid not in contacts:
                    ev = contact(eid)
                    assert ev is not None, eid
                    contacts[eid] = ev
                    todo.extend(n[0] for n in ev.nodes if n[0] not in nodes)
        return nodes, contacts

    def _recompute(
        self,
        start: list[str],
        change: Change,
        *,
        source: str,
        times: tuple[int, int],
        reason: str | None = None,
        gen: int | None = None,
    ) -> None:
        db = self._db
        nodes, contacts = self._region(start)
        rank = self._rank
        kinds = {}
        edges = []
        anchors: dict[str, str] = {}  # contact → anchor, for the contacts that have one
        for eid, ev in contacts.items():
            anchor = ev.anchor
            if anchor is not None:
                anchors[eid] = anchor
            for key, kind, rule in ev.nodes:
                kinds[key] = kind
                if anchor is not None and key != anchor:
                    edges.append((RULE_RANK[rule], rank(kind), ev.occurred_ms, eid, key, rule))
        withdrawn = {k: set(rec.unlinked) for k, rec in nodes.items() if rec.unlinked}
        uf = _UnionFind(kinds, withdrawn)
        edges.sort()
        limits = self.rules.limits
        used_rules: set[str] = set()
        for _r, _k, _t, eid, key, rule in edges:
            ra, rb = uf.find(anchors[eid]), uf.find(key)
            if ra == rb:
                continue
            refused = uf.refusal(ra, rb, limits)
            if refused is None:
                uf.union(ra, rb)
                if eid == source:
                    used_rules.add(rule)
            elif eid == source:
                change.events.append(
                    self._event(
                        "link_rejected",
                        None,
                        times,
                        source=source,
                        identities=[anchors[eid], key],
                        rule=rule,
                        reason=refused,
                        gen=gen,
                    )
                )
        # Each component's customer: its earliest contact (event time, then event id).
        first: dict[str, tuple[int, str]] = {}
        for eid, anchor in anchors.items():
            root = uf.find(anchor)
            at = (contacts[eid].occurred_ms, eid)
            was = first.get(root)
            if was is None or at < was:
                first[root] = at
        customer = {root: db.customer_id(at[1]) for root, at in first.items()}  # once per component
        new = {k: customer.get(uf.find(k)) for k in kinds}
        old = {k: rec.customer_id for k, rec in nodes.items()}
        if any(old.get(k) != cust for k, cust in new.items()):
            self._emit_diff(
                old,
                new,
                change,
                source=source,
                times=times,
                rule=",".join(sorted(used_rules)) or None,
                reason=reason,
                gen=gen,
            )
        for k, cust in new.items():
            if old.get(k) != cust:
                db.put_node(k, nodes[k].with_customer(cust))  # as read: nothing wrote it since
        for eid, ev in contacts.items():
            cust = new[ev.anchor] if ev.anchor is not None else ev.customer_id
            if cust != ev.customer_id:
                if ev.customer_id is not None:
                    assert cust is not None  # an anchored contact's group has a first contact: itself at least
                    change.rekeyed.append((eid, cust, ev.customer_id))
                db.put_contact(eid, ev.with_customer(cust))
        if not change.events:
            return
        for e in change.events:
            if e["customer_id"] is None:  # a rejection on the source contact: its own customer
                src = db.contact(source)
                e["customer_id"] = new.get(src.anchor) if src and src.anchor else None
        change.events[:] = [e for e in change.events if e["customer_id"] is not None]
        for e in change.events:
            if e["event_type"] == "link_rejected":
                e["event_id"] = self._event_id(e)

    def _emit_diff(self, old: dict, new: dict, change: Change, *, source: str, times, rule, reason, gen) -> None:
        groups: dict[str, list[str]] = {}
        for k, cust in new.items():
            if cust is not None:
                groups.setdefault(cust, []).append(k)
        common = {"source": source, "rule": rule, "gen": gen}
        for cust in sorted(groups):
            members = sorted(groups[cust])
            before = {old.get(k) for k in members} - {None}
            added = [k for k in members if old.get(k) is None and not k.startswith("fact:")]
            if not before:
                change.events.append(self._event("observed", cust, times, identities=added, **common))
            elif before - {cust}:
                change.events.append(
                    self._event(
                        "merged",
                        cust,
                        times,
                        identities=added,
                        related=sorted(before - {cust}),
                        reason=reason,
                        moved=moved_identities(old, new, to=cust),
                        **common,
                    )
                )
            elif added:
                change.events.append(self._event("linked", cust, times, identities=added, **common))
        parts: dict[str, set[str]] = {}
        for k, was in old.items():
            if was is not None:
                parts.setdefault(was, set()).add(new.get(k) or "")
        for was in sorted(parts):
            now = parts[was] - {""}
            if len(now) > 1:
                change.events.append(
                    self._event(
                        "unmerged",
                        was,
                        times,
                        source=source,
                        related=sorted(now - {was}),
                        reason=reason or "guardrail",
                        moved=moved_identities(old, new, origin=was),
                        gen=gen,
                    )
                )

    def _event(
        self,
        event_type: str,
        customer_id: str | None,
        times,
        *,
        source: str,
        identities=(),
        related=(),
        rule=None,
        reason=None,
        moved=(),
        gen: int | None = None,
    ) -> dict:
        keys = [k for k in identities if not k.startswith("fact:")]
        e = {
            "event_type": event_type,
            "occurred_at": times[0],
            "recorded_at": times[1],
            "customer_id": customer_id,
            "identities": [parse_identity_key(k) for k in keys],
            "related_customer_ids": list(related),
            "rule": rule,
            "reason": reason,
            "source_event_id": source,
            "gen": gen,
            "moved_identities": list(moved),
        }
        # a rejection without its customer yet gets its id once it has one (``_recompute``)
        e["event_id"] = None if customer_id is None else self._event_id(e, [_key_again(k) for k in keys])
        return e

    @staticmethod
    def _event_id(e: dict, keys: list[str] | None = None) -> str:
        """UUIDv5 of the event's type, customer, source, related customers and identities (their
        keys as ``identity_key`` gives them from the event's ``identities``)."""
        ids = ",".join(keys if keys is not None else (identity_key(i) for i in e["identities"]))
        name = (
            f"{e['event_type']}:{e['customer_id']}:{e['source_event_id']}:{','.join(e['related_customer_ids'])}:{ids}"
        )
        return _identity_event_uuid(name)


def _with_contact(rec: NodeRecord | None, event_id: str) -> NodeRecord:
    """A node's record with one more contact carrying it."""
    if rec is None:
        return NodeRecord((event_id,))
    return NodeRecord((*rec.contacts, event_id), rec.customer_id, rec.unlinked)


def _key_again(key: str) -> str:
    """``identity_key(parse_identity_key(key))`` without the record between: the key itself, but
    for a social or account key with an empty platform (``social::x``), which reads back as
    ``social:x``."""
    i = key.find(":")
    if i < 0 or key[i + 1 : i + 2] == ":":
        return identity_key(parse_identity_key(key))
    return key


class _Uuid5:
    """``threadline.ids.uuid5_str(namespace, name)`` with the namespace hashed once (two or
    more ids a contact: its customer's, its events')."""

    def __init__(self, namespace: uuid.UUID):
        self._sha1 = hashlib.sha1(namespace.bytes, usedforsecurity=False)

    def __call__(self, name: str) -> str:
        h = self._sha1.copy()
        h.update(name.encode())
        x = h.hexdigest()
        # the version nibble (digit 12) is 5; the variant's two bits (digit 16) are 10
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{VARIANT_DIGIT[x[16]]}{x[17:20]}-{x[20:32]}"


_customer_uuid = _Uuid5(CUSTOMER_NS)
_identity_event_uuid = _Uuid5(IDENTITY_EVENT_NS)


def resolve(contact: dict, customer_id: str) -> dict:
    """The same contact with customer_id set (a new dict; the input is not changed)."""
    return {**contact, "customer_id": customer_id}
