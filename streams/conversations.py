"""A customer's conversations and SLA clocks as a pure function of its contacts, in event time.

No I/O here: plain functions and dataclasses. ``streams.app`` wires them to topics and a table.

The function
------------
``segment(customer_id, contacts, rules)`` walks a customer's contacts (deduplicated by event id,
sorted by (event time, event id)) once and cuts them into conversations; ``finish(convs, wm, rules)``
applies the watermark (clocks that fell due, conversations that went quiet). Nothing in either
depends on the order, the delay or the number of times the contacts arrived, so the same set of
contacts and the same watermark give the same conversations, ids and clock outcomes.

Placement of each contact, in this order:

1. **Reply joins**: an email In-Reply-To / References or a social ``reply_to_id`` naming a message
   (Message-ID or provider id) of an earlier contact joins that contact's conversation; a contact
   whose ``call_id`` (Twilio CallSid, Asterisk uniqueid) is shared with an earlier contact joins
   the call's conversation (a voice transcription joins its call, whatever its timestamp). A join
   reopens a resolved conversation.
2. A contact that resolves (event type ``contact.resolved`` / ``conversation.resolved`` or metadata
   ``conversation_status=resolved``) joins the current conversation (the one of the previous contact).
3. **Inactivity**: a contact within the window of the current open conversation (per channel, of
   the conversation's latest channel) continues it, whatever its own channel (a change of channel
   is a switch). Past the window, the conversation is resolved at the window's end (``inactivity``)
   and the contact opens a new one. Without a later contact, the watermark resolves a quiet
   conversation at its window's end too, unless it awaits an agent (``awaits_agent``).
4. **Reopen**: a contact within the reopen window after an explicit resolution reopens it.
5. Otherwise a new conversation. Its id is UUIDv5 of the customer and its first contact's event id.

Clocks (all in event time, business hours and pauses through ``streams.sla``): first response
from the first inbound customer contact to the first agent reply; next response from a later
inbound contact (after the first response stopped) to the next reply; resolution from the first
inbound contact to the resolution, paused while waiting on the customer. A clock stops *hit* when
it stops at or before its due time and *breached* (at its due time) when it stops later or when
the watermark passes its due time while it runs: hit or breached, never both.

Watermark: the time up to which the worker believes it has seen every contact. A running clock
whose due time is before it is breached; an open conversation whose window ended before it is
resolved by inactivity. A later contact that proves otherwise (a reply from before the due time
arriving late) changes the outcome and the difference says so.

The difference
--------------
The state keeps, per conversation, what was published (its contacts, switches, reopens, status,
waiting-on, clock outcomes, and the version). After each change the new conversations are
compared with it and the difference is emitted: ``opened``, ``message_appended``,
``message_removed`` (the contact now belongs to another conversation or customer),
``channel_switched``, ``reopened``, ``waiting_changed``, ``sla_started``, ``sla_hit``,
``sla_breached``, ``resolved`` and ``merged_into`` (the conversation's contacts now belong to
another conversation: a late contact joined two, or identity merged its customer into another).
Every event carries the conversation's ``version`` (+1 per event, so events of one instant have an
order) and its state after the change (status, opened_at, messages, breaches, the clock that falls
due next): folding a conversation's events keeps the one with the highest version.

Event ids are UUIDv5 of (conversation, event type, subject: contact, clock kind + start, ...), so
the same change gives the same id in a replay; an id a conversation already published (a state
that came back, e.g. breached → hit → breached across a merge and an unmerge) is salted with the
version so consumers that deduplicate by event id never drop a real change.

Bounded state
-------------
The state holds the contacts that can still change a conversation (compact rows) and summaries
of closed ones. A conversation is *frozen* when it is resolved and the watermark is more than
``StitchRules.retention_seconds`` (30 days) past its resolution, and every live conversation opened
after its last contact: its contacts leave the state, a summary stays (last
``MAX_FROZEN``). A contact at or before the frozen horizon (older than the window) is placed by a
documented rule, never silently dropped: it is appended to the frozen conversation whose span
holds its time (else the latest frozen one that opened before it, else the first one) as a
``message_appended`` with no lifecycle or clock change; it does not open, reopen or split anything.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not, itemgetter
from typing import NamedTuple

import orjson

from streams import sla
from streams.identity import to_millis
from streams.rules import StitchRules
from threadline.ids import uuid5_str

CONVERSATION_NS = uuid.UUID("3a9c1e7f-5b2d-5c4e-9a8f-1d6b3e2c7a90")
RESOLVING_TYPES = frozenset({"contact.resolved", "conversation.resolved"})
NO_SLA_CHANNELS = frozenset({"store"})
CUSTOMER, AGENT, OTHER = "c", "a", "o"
FIRST, NEXT, RESOLUTION = "first_response", "next_response", "resolution"
MAX_FROZEN = 20  # summaries of frozen conversations kept per customer
MAX_OLD_IDS = 2000  # event ids of frozen contacts kept to recognise their duplicates
MAX_GONE = 2000  # event ids of contacts that moved to another customer
MAX_FROZEN_MSG_IDS = 50  # message ids per frozen conversation (for nothing but documentation of joins)


# -- contacts -------------------------------------------------------------------------------


class ContactView(NamedTuple):
    """What the rules need of a contact (a compact row in the state); a named tuple, as every
    change of a customer makes one per contact of its state."""

    event_id: str
    t: int
    recorded: int
    channel: str
    role: str  # CUSTOMER (inbound, customer), AGENT (outbound, agent) or OTHER
    resolves: bool
    message_ids: tuple[str, ...]
    refs: tuple[str, ...]
    call_id: str | None
    facts: tuple[tuple[str, str, str | None], ...] = ()
    gen: int = 0  # the identity graph's position that assigned it to this customer

    def row(self) -> list:
        return [
            self.event_id,
            self.t,
            self.recorded,
            self.channel,
            self.role,
            int(self.resolves),
            list(self.message_ids),
            list(self.refs),
            self.call_id,
            [list(f) for f in self.facts],
            self.gen,
        ]

    @classmethod
    def from_row(cls, r: list) -> ContactView:
        return cls._make(
            (
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                bool(r[5]),
                tuple(r[6]),
                tuple(r[7]),
                r[8],
                tuple(map(tuple, r[9])),
                r[10],
            )
        )


def view(contact: dict, gen: int = 0) -> ContactView:
    actor = contact.get("actor") or {}
    role, direction = actor.get("role", "customer"), contact.get("direction", "inbound")
    thread = contact.get("thread") or {}
    facts = [(f["kind"], f["value"], f.get("source")) for f in contact.get("facts") or []]
    if contact.get("language"):
        facts.append(("language", contact["language"], "contact.language"))
    meta = contact.get("metadata") or {}
    ids = [x for x in (thread.get("message_id"), contact.get("provider_id")) if x]
    refs = [x for x in (thread.get("in_reply_to"), *(thread.get("references") or []), thread.get("reply_to_id")) if x]
    kind = (
        CUSTOMER
        if direction == "inbound" and role == "customer"
        else AGENT
        if direction == "outbound" and role == "agent"
        else OTHER
    )
    return ContactView(
        event_id=contact["event_id"],
        t=to_millis(contact["occurred_at"]),
        recorded=to_millis(contact.get("recorded_at") or contact["occurred_at"]),
        channel=contact.get("channel") or "other",
        role=kind,
        resolves=contact.get("event_type") in RESOLVING_TYPES or meta.get("conversation_status") == "resolved",
        message_ids=tuple(dict.fromkeys(ids)),
        refs=tuple(dict.fromkeys(refs)),
        call_id=thread.get("call_id") or None,
        facts=tuple(facts),
        gen=gen,
    )


def order(c: ContactView) -> tuple[int, str]:
    return c.t, c.event_id


# -- conversations --------------------------------------------------------------------------


@dataclass(slots=True)
class Clock:
    kind: str
    target: int  # seconds
    started: int
    acc: int = 0  # counted ms while not running
    since: int | None = None  # running since (None while paused or stopped)
    state: str = "running"  # running | paused | hit | breached
    end: int | None = None  # hit: when it stopped; breached: its due time

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.started}"

    def due(self, hours) -> int | None:
        if self.state != "running" or self.since is None:
            return None
        left = max(0, self.target * 1000 - self.acc)
        return self.since + left if hours is None else sla.add_ms(self.since, left, hours)

    def elapsed(self, at: int, hours) -> int:
        return self.acc + (sla.elapsed_ms(self.since, at, hours) if self.since is not None else 0)

    def stop(self, at: int, hours) -> None:
        if self.state in ("hit", "breached"):
            return
        due = (
            self.due(hours) if self.state == "running" else sla.add_ms(at, max(0, self.target * 1000 - self.acc), hours)
        )
        spent = self.elapsed(at, hours)
        met = spent <= self.target * 1000
        self.acc, self.since = spent, None
        self.state, self.end = ("hit", at) if met else ("breached", due)

    def pause(self, at: int, hours) -> None:
        if self.state != "running":
            return
        due = self.due(hours)
        if due is not None and due < at:  # it ran past its due time before the pause
            self.acc, self.since, self.state, self.end = self.target * 1000, None, "breached", due
        else:
            self.acc, self.since, self.state = self.elapsed(at, hours), None, "paused"

    def resume(self, at: int) -> None:
        if self.state == "paused":
            self.since, self.state = at, "running"

    def record(self, at: int, hours) -> dict:
        """The clock as the conversation event's ``SlaClock`` record, as of ``at``."""
        left = max(0, self.target * 1000 - self.acc)
        if self.state == "breached":
            d, spent = self.end, self.target * 1000
        elif self.state == "hit":
            assert self.end is not None  # a clock that was hit stopped at some time
            d, spent = sla.add_ms(self.end, left, hours), self.acc
        elif self.state == "paused":
            d, spent = sla.add_ms(at, left, hours), self.acc
        else:
            d, spent = self.due(hours), self.elapsed(max(at, self.started), hours)
        return {
            "kind": self.kind,
            "target_seconds": self.target,
            "started_at": self.started,
            "due_at": d,
            "elapsed_seconds": spent // 1000,
            "state": self.state,
        }


@dataclass(slots=True)
class Conversation:
    id: str
    customer_id: str
    contacts: list[str] = field(default_factory=list)  # event ids, in (event time, event id) order
    opened_at: int = 0
    last_at: int = 0
    channel: str = "other"  # of the latest contact
    status: str = "open"  # open | resolved
    resolved_at: int | None = None
    resolved_by: str | None = None  # the resolving contact, or "inactivity"
    waiting_on: str = "nobody"
    waiting_by: str | None = None  # the contact that set waiting_on
    switches: list[tuple[str, str, str]] = field(default_factory=list)  # (contact, previous, new channel)
    reopens: list[str] = field(default_factory=list)  # contacts that reopened it
    clocks: list[Clock] = field(default_factory=list)

    def current(self, kind: str) -> Clock | None:
        for clock in reversed(self.clocks):
            if clock.kind == kind:
                return clock
        return None

    @property
    def breaches(self) -> int:
        return sum(1 for c in self.clocks if c.state == "breached")

    def next_clock(self, hours) -> Clock | None:
        """The running clock that falls due first (what an inbox shows)."""
        first: tuple[int, str] | None = None  # the least (due time, kind) of the running clocks
        for c in self.clocks:
            if c.state == "running":
                due = c.due(hours)
                if due is not None and (first is None or (due, c.kind) < first):
                    first = (due, c.kind)
        if first is None:
            return None
        kind = first[1]
        return next(c for c in self.clocks if c.kind == kind and c.state == "running")


def clock_keys(clocks: list[Clock]) -> list[str]:
    """One key per clock of a conversation: ``kind:started``, and ``kind:started#n`` for the n-th
    clock of the same kind and start (a conversation resolved and reopened at the same instant)."""
    seen: dict[str, int] = {}
    keys = []
    for c in clocks:
        key = c.key
        n = seen[key] = seen.get(key, 0) + 1
        keys.append(key if n == 1 else f"{key}#{n}")
    return keys


def published_clock(entry) -> tuple[str | None, int | None]:
    """A clock as the published map keeps it: ``[state, end, target]``; before sla_withdrawn the map
    kept the state alone (its end unknown, so a moved end is not re-announced for those)."""
    if entry is None:
        return None, None
    if isinstance(entry, str):
        return entry, None
    return entry[0], entry[1]


def withdrawn_clock(kind: str, started: int, state: str | None, end: int | None, entry) -> Clock:
    """The clock an sla_withdrawn event names, as it was last published."""
    target = entry[2] if isinstance(entry, list) and len(entry) > 2 else 0
    clock = Clock(kind=kind, target=target, started=started)
    if state in ("hit", "breached"):
        clock.state, clock.end, clock.acc, clock.since = state, end, target * 1000, None
    else:
        clock.since = started
    return clock


@functools.lru_cache(maxsize=1 << 14)  # every change of a customer names each of its conversations again
def conversation_id(customer_id: str, first_event_id: str) -> str:
    return uuid5_str(CONVERSATION_NS, f"{customer_id}:{first_event_id}")


def segment(customer_id: str, contacts: list[ContactView], rules: StitchRules) -> list[Conversation]:
    """Cut a customer's contacts (sorted by (event time, event id), no duplicates) into conversations."""
    hours = rules.business_hours
    convs: list[Conversation] = []
    by_msg: dict[str, Conversation] = {}
    by_call: dict[str, Conversation] = {}
    cur: Conversation | None = None
    for c in contacts:
        conv, reopen = None, False
        for ref in c.refs:
            if ref in by_msg:
                conv = by_msg[ref]
                break
        if conv is None and c.call_id and c.call_id in by_call:
            conv = by_call[c.call_id]
        if conv is not None:
            reopen = conv.status == "resolved" and not c.resolves
        elif cur is not None and c.resolves:
            conv = cur
        elif cur is not None and cur.status == "open":
            if c.t - cur.last_at <= rules.window(cur.channel) * 1000:
                conv = cur
            else:
                _close(cur, cur.last_at + rules.window(cur.channel) * 1000, "inactivity", hours)
        elif (
            cur is not None
            and cur.resolved_at is not None
            and cur.resolved_by != "inactivity"
            and c.t - cur.resolved_at <= rules.reopen_seconds * 1000
        ):
            conv, reopen = cur, True
        if conv is None:
            conv = Conversation(
                conversation_id(customer_id, c.event_id), customer_id, opened_at=c.t, last_at=c.t, channel=c.channel
            )
            convs.append(conv)
        if reopen:
            conv.status, conv.resolved_at, conv.resolved_by = "open", None, None
            conv.reopens.append(c.event_id)
        if conv.contacts and c.channel != conv.channel:
            conv.switches.append((c.event_id, conv.channel, c.channel))
        conv.channel, conv.last_at = c.channel, c.t
        conv.contacts.append(c.event_id)
        for mid in c.message_ids:
            by_msg[mid] = conv
        if c.call_id:
            by_call.setdefault(c.call_id, conv)
        _lifecycle(conv, c, rules)
        cur = conv
    return convs


def awaits_agent(conv: Conversation) -> bool:
    """The customer spoke last and nobody answered: the watermark never resolves such a conversation
    by inactivity (an unanswered customer must not leave the inbox by waiting long enough); it
    stays open, its clocks breached, until it is answered or resolved, or until a contact after
    its window opens a new conversation (which closes it at its window's end, as rule 3 says)."""
    return conv.status == "open" and conv.waiting_on == "agent"


def _close(conv: Conversation, at: int, by: str, hours) -> None:
    for clock in conv.clocks:
        clock.stop(at, hours)
    if conv.status == "open":
        conv.status, conv.resolved_at, conv.resolved_by = "resolved", at, by
    conv.waiting_on, conv.waiting_by = "nobody", (by if by != "inactivity" else None)


def _lifecycle(conv: Conversation, c: ContactView, rules: StitchRules) -> None:
    hours = rules.business_hours
    if c.resolves:
        _close(conv, c.t, c.event_id, hours)
        return
    if c.role == CUSTOMER:
        conv.waiting_on, conv.waiting_by = "agent", c.event_id
        if c.channel in NO_SLA_CHANNELS:
            return
        target = rules.target(c.channel)
        first = conv.current(FIRST)
        if first is None:
            conv.clocks.append(Clock(FIRST, target, c.t, since=c.t))
        elif first.state in ("hit", "breached"):
            nxt = conv.current(NEXT)
            if nxt is None or nxt.state in ("hit", "breached"):
                conv.clocks.append(Clock(NEXT, target, c.t, since=c.t))
        res = conv.current(RESOLUTION)
        if res is None or res.state in ("hit", "breached"):
            conv.clocks.append(Clock(RESOLUTION, rules.resolution_seconds, c.t, since=c.t))
        else:
            res.resume(c.t)
    elif c.role == AGENT:
        conv.waiting_on, conv.waiting_by = "customer", c.event_id
        for kind in (FIRST, NEXT):
            clock = conv.current(kind)
            if clock is not None and clock.state == "running":
                clock.stop(c.t, hours)
        res = conv.current(RESOLUTION)
        if res is not None:
            res.pause(c.t, hours)


def finish(convs: list[Conversation], wm: int | None, rules: StitchRules) -> list[Conversation]:
    """Apply the watermark: conversations quiet past their window are resolved at its end; running
    clocks whose due time is before the watermark are breached at their due time."""
    if wm is None:
        return convs
    hours = rules.business_hours
    for conv in convs:
        end = conv.last_at + rules.window(conv.channel) * 1000
        if conv.status == "open" and end < wm and not awaits_agent(conv):
            _close(conv, end, "inactivity", hours)
        for clock in conv.clocks:
            due = clock.due(hours)
            if due is not None and due < wm:
                clock.acc, clock.since, clock.state, clock.end = clock.target * 1000, None, "breached", due
    return convs


def conversations_of(customer_id: str, contacts, rules: StitchRules, wm: int | None = None) -> list[Conversation]:
    """The whole function: contacts in any order, with duplicates → conversations at ``wm``."""
    unique = {c.event_id: c for c in contacts}
    ordered = sorted(unique.values(), key=order)
    top = ordered[-1].t if ordered else None
    wm = max(wm, top) if wm is not None and top is not None else (wm if wm is not None else top)
    return finish(segment(customer_id, ordered, rules), wm, rules)


def deadline(convs: list[Conversation], rules: StitchRules) -> int | None:
    """The earliest event time at which the watermark would change something (a clock falls due,
    a conversation's window ends)."""
    times = []
    for conv in convs:
        if conv.status == "open" and not awaits_agent(conv):
            times.append(conv.last_at + rules.window(conv.channel) * 1000)
        for clock in conv.clocks:
            d = clock.due(rules.business_hours)
            if d is not None:
                times.append(d)
    return min(times) if times else None


# -- state and the difference -----------------------------------------------------------------


def current(state: dict | None) -> dict | None:
    """A state of this format, or None (a state written by an earlier format starts afresh: rebuild
    the table from contacts.resolved.v1 to get its history back)."""
    return state if state and "pub" in state else None


def new_state(customer_id: str) -> dict:
    return {
        "customer_id": customer_id,
        "wm": None,
        "contacts": [],
        "pub": {},
        "frozen": [],
        "horizon": None,
        "old_ids": [],
        "gone": {},
        "facts": {},
        "outbox": {},
    }


def _copy(state: dict) -> dict:
    """A deep copy of a JSON state (several times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(state))


def _fork(state: dict) -> dict:
    """A state a change may work on, leaving ``state`` as it was: a new copy of each container the
    rules change in place (the contact list, the maps of published records, facts, moved contacts
    and outbox, the frozen summaries), the values inside shared, as the rules only replace those
    (a published record, a fact, a contact row: never changed in place; ``apply`` changes a row
    on a deep ``_copy``). The same JSON as ``_copy``, without serializing the whole state twice."""
    new = dict(state)
    new["contacts"] = list(state["contacts"])
    new["frozen"] = [dict(f) for f in state["frozen"]]
    for key in ("pub", "gone", "facts", "outbox"):
        new[key] = dict(state[key])
    return new


EVENT_KEYS = (
    "event_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "customer_id",
    "conversation_id",
    "channel",
    "previous_channel",
    "contact_event_id",
    "waiting_on",
    "sla",
    "version",
    "status",
    "opened_at",
    "messages",
    "breaches",
    "open_sla",
    "merged_into",
    "merged_into_customer_id",
)


def _pack(events: list[dict]) -> list:
    """A change's events as the outbox keeps them: the customer's facts once, the first event's
    values in ``EVENT_KEYS`` order, and each later event as the values that differ from the event
    before it (``{"index": value}``: the events of a change share their conversation, contact and
    snapshot, so these are mostly the id, the type and the version)."""
    rows: list = []
    prev: tuple | None = None
    for e in events:
        row = _event_values(e)
        if prev is None:
            rows.append(list(row))
        else:  # of the values that are not the very same object, those that differ
            delta = {}
            for i in compress(_PLACES, map(is_not, row, prev)):
                v, w = row[i], prev[i]
                if v != w or type(v) is not type(w):
                    delta[_INDEX[i]] = v
            rows.append(delta)
        prev = row
    return [events[0]["facts"] if events else [], rows]


_PLACES = range(len(EVENT_KEYS))
_INDEX = tuple(str(i) for i in _PLACES)  # a value's place in a compact outbox row
_event_values = itemgetter(*EVENT_KEYS)  # an event's values in EVENT_KEYS order


def _unpack(entry: str | list) -> list[dict]:
    """The events an outbox entry kept: ``_pack``'s rows as JSON text (what ``_remember`` stores),
    or, in states written before it, those rows themselves, or every row whole."""
    facts, rows = orjson.loads(entry) if isinstance(entry, str) else entry
    out = []
    prev: list = []
    for row in rows:
        if isinstance(row, dict):  # the values that differ from the row before
            row = [row.get(str(i), v) for i, v in enumerate(prev)]
        out.append({**dict(zip(EVENT_KEYS, _copy(row))), "facts": _copy(facts)})
        prev = row
    return out


def _short(event_id: str) -> str:
    return event_id.replace("-", "")[:12]


class Stitcher:
    """The conversation rules over a per-customer JSON state (a table value in the worker)."""

    def __init__(self, rules: StitchRules | None = None):
        self.rules = rules or StitchRules()
        self.hours = self.rules.business_hours

    # -- entry points ----------------------------------------------------------------------

    def apply(
        self, state: dict | None, contact: dict, *, wm: int | None = None, gen: int = 0
    ) -> tuple[dict, list[dict]]:
        """One resolved contact (``gen``: the identity graph's position that assigned it here;
        ``wm``: the partition's watermark): the new state and the events of the difference."""
        c = view(contact, gen)
        known = current(state)
        state = known or new_state(contact["customer_id"])
        rows = state["contacts"]
        key = f"{c.event_id}:{gen}"
        if key in state["outbox"]:
            return state, _unpack(state["outbox"][key])
        present = next((r for r in rows if r[0] == c.event_id), None)
        if present is not None and present[10] < gen:  # assigned here again, after a move not seen yet
            state = _copy(state)
            next(r for r in state["contacts"] if r[0] == c.event_id)[10] = gen
            return state, []
        if present is not None or c.event_id in state["old_ids"] or state["gone"].get(c.event_id, -1) >= gen:
            return state, []  # a duplicate, or an assignment older than the move that took it away
        if known is not None:  # the caller's state is left as it was (a new one is this call's own)
            state = _fork(state)
        state["gone"].pop(c.event_id, None)
        if state["horizon"] is not None and c.t <= state["horizon"]:
            events = self._archive(state, c)
        else:
            state["contacts"].append(c.row())
            state["contacts"].sort(key=lambda r: (r[1], r[0]))
            events = self._recompute(state, wm=wm, recorded=c.recorded, cause=c.event_id)
        self._remember(state, key, events)
        return state, events

    def remove(
        self,
        state: dict | None,
        event_ids: list[str],
        to_customer: str | None,
        *,
        gen: int,
        wm: int | None = None,
        at: int | None = None,
    ) -> tuple[dict, list[dict]]:
        """Identity moved these contacts to ``to_customer`` (a merge or an unmerge) at graph
        position ``gen``: the conversations are recomputed without them; a conversation left
        with none ends ``merged_into``."""
        now = current(state)
        state = _fork(now) if now else new_state(to_customer or "")
        key = f"rm:{gen}"
        if key in state["outbox"]:
            return state, _unpack(state["outbox"][key])
        leaving = set()
        for eid in event_ids:
            row = next((r for r in state["contacts"] if r[0] == eid), None)
            if row is not None and row[10] > gen:
                continue  # assigned here again after this move
            state["gone"][eid] = max(gen, state["gone"].get(eid, gen))
            if row is not None:
                leaving.add(eid)
        while len(state["gone"]) > MAX_GONE:
            state["gone"].pop(next(iter(state["gone"])))
        if not leaving:
            return state, []
        gone_rows = {r[0]: ContactView.from_row(r) for r in state["contacts"] if r[0] in leaving}
        state["contacts"] = [r for r in state["contacts"] if r[0] not in leaving]
        events = self._recompute(state, wm=wm, recorded=at, cause=None, moved_to=to_customer, removed=gone_rows)
        self._remember(state, key, events)
        return state, events

    def advance(self, state: dict, wm: int) -> tuple[dict, list[dict]]:
        """The watermark moved (the timer): breaches and inactivity that fell due."""
        if current(state) is None or (state["wm"] is not None and wm <= state["wm"]):
            return state, []
        state = _fork(state)
        return state, self._recompute(state, wm=wm, recorded=None, cause=None)

    def conversations(self, state: dict | None) -> list[Conversation]:
        now = current(state)
        if not now:
            return []
        contacts = [ContactView.from_row(r) for r in now["contacts"]]
        return finish(segment(now["customer_id"], contacts, self.rules), now["wm"], self.rules)

    def next_deadline(self, state: dict) -> int | None:
        return state.get("deadline") if current(state) else None

    # -- the difference --------------------------------------------------------------------

    def _recompute(
        self,
        state: dict,
        *,
        wm: int | None,
        recorded: int | None,
        cause: str | None,
        moved_to: str | None = None,
        removed: dict | None = None,
    ) -> list[dict]:
        contacts = [ContactView.from_row(r) for r in state["contacts"]]
        top = contacts[-1].t if contacts else None
        wms = [w for w in (state["wm"], wm, top) if w is not None]
        state["wm"] = max(wms) if wms else None
        convs = finish(segment(state["customer_id"], contacts, self.rules), state["wm"], self.rules)
        views = {c.event_id: c for c in contacts}
        views.update(removed or {})
        facts = self._facts(state, contacts)
        events: list[dict] = []
        pub = state["pub"]
        for conv in sorted(convs, key=lambda cv: (cv.opened_at, cv.id)):
            events += self._diff(state, conv, pub.get(conv.id), views, recorded, facts)
        live = {conv.id for conv in convs}
        where: dict[str, str] | None = None  # contact -> its conversation, when one ended
        for cid in sorted(pub):
            p = pub[cid]
            if cid in live or p["st"] == "merged_into":
                continue
            if where is None:
                where = {eid: conv.id for conv in convs for eid in conv.contacts}
            target = next((where[e] for e in p["c"] if e in where), None)
            events += self._ended(state, cid, p, target, None if target else moved_to, facts)
        self._freeze(state, convs, views)
        state["deadline"] = deadline(convs, self.rules)
        return events

    def _diff(
        self, state: dict, conv: Conversation, p: dict | None, views: dict, recorded: int | None, facts: list[dict]
    ) -> list[dict]:
        """The events that take what was published of ``conv`` (``p``) to what it is now, each with
        the next version; the new published record goes to ``state["pub"]``."""
        new = p is None
        p = p or self._unpublished(conv)
        keys = clock_keys(conv.clocks)
        out = [
            *self._lifecycle_changes(conv, p, views, new),
            *self._clock_changes(conv, p, views, keys),
        ]
        if conv.status == "resolved" and (p["st"] != "resolved" or p["ra"] != conv.resolved_at):
            by = views.get(conv.resolved_by) if conv.resolved_by != "inactivity" else None
            out.append(("resolved", f"{conv.resolved_at}:{conv.resolved_by}", conv.resolved_at, by, {}))
        snapshot = self._snapshot(conv)
        if not out and snapshot != p.get("s"):  # e.g. a clock withdrawn by a late contact
            out.append(("other", f"{conv.last_at}:{len(conv.clocks)}", conv.last_at, None, {}))
        if not out:
            return []
        emitted = set(p["e"])
        events = []
        v = p["v"]
        for etype, subject, at, contact, extra in out:
            v += 1
            base = uuid5_str(CONVERSATION_NS, f"{conv.id}:{etype}:{subject}")
            short = _short(base)
            eid = base if short not in emitted else uuid5_str(CONVERSATION_NS, f"{base}:{v}")
            emitted.add(short)
            clock = extra.get("clock")
            if etype in ("sla_hit", "sla_breached"):
                rec_at = at
            else:
                rec_at = max(at, contact.recorded) if contact else max(at, recorded or at)
            events.append(
                self._event(
                    state,
                    conv.id,
                    etype,
                    eid,
                    at,
                    rec_at,
                    version=v,
                    contact=contact,
                    channel=contact.channel if contact else conv.channel,
                    previous=extra.get("previous_channel"),
                    sla_record=clock.record(at, self.hours) if clock else None,
                    snapshot=snapshot,
                    facts=facts,
                )
            )
        state["pub"][conv.id] = self._published(conv, keys, v, emitted, snapshot)
        return events

    @staticmethod
    def _unpublished(conv: Conversation) -> dict:
        """The published record of a conversation nothing was published of yet."""
        return {
            "v": 0,
            "c": [],
            "sw": [],
            "ro": [],
            "st": "open",
            "ra": None,
            "w": ["nobody", None],
            "k": {},
            "e": [],
            "o": conv.opened_at,
            "la": conv.last_at,
        }

    @staticmethod
    def _published(conv: Conversation, keys: list[str], version: int, emitted: set[str], snapshot: dict) -> dict:
        """What is remembered of a conversation once its events are out: the next diff's base."""
        return {
            "v": version,
            "c": list(conv.contacts),
            "sw": [s[0] for s in conv.switches],
            "ro": list(conv.reopens),
            "st": conv.status,
            "ra": conv.resolved_at,
            "w": [conv.waiting_on, conv.waiting_by],
            "k": {k: [c.state, c.end, c.target] for k, c in zip(keys, conv.clocks)},
            "e": sorted(emitted),
            "o": conv.opened_at,
            "la": conv.last_at,
            "n": len(conv.contacts),
            "b": conv.breaches,
            "ch": conv.channel,
            "s": snapshot,
        }

    @staticmethod
    def _lifecycle_changes(conv: Conversation, p: dict, views: dict, new: bool) -> list[tuple]:
        """Opened or back, channel switches, reopenings, messages added and removed, and who it
        waits on: (type, subject, at, contact, extras), in that order."""
        out: list[tuple] = []
        first = views[conv.contacts[0]]
        if new:
            out.append(("opened", first.event_id, conv.opened_at, first, {}))
        elif p["st"] == "merged_into":
            out.append(("reopened", f"back:{first.event_id}", conv.opened_at, first, {}))
        was = set(p["c"])
        for eid, prev, ch in conv.switches:
            if eid not in p["sw"]:
                out.append(("channel_switched", eid, views[eid].t, views[eid], {"previous_channel": prev}))
        for eid in conv.reopens:
            if eid not in p["ro"]:
                out.append(("reopened", eid, views[eid].t, views[eid], {}))
        if p["st"] == "resolved" and conv.status == "open" and not (set(conv.reopens) - set(p["ro"])):
            last = views[conv.contacts[-1]]
            out.append(("reopened", f"late:{last.event_id}", last.t, last, {}))
        for eid in conv.contacts:
            if eid not in was:
                out.append(("message_appended", eid, views[eid].t, views[eid], {}))
        now = set(conv.contacts)
        for eid in p["c"]:
            if eid not in now:
                v = views.get(eid)
                out.append(("message_removed", eid, v.t if v else conv.last_at, v, {}))
        if [conv.waiting_on, conv.waiting_by] != p["w"] and not (
            conv.status == "resolved" and conv.waiting_on == "nobody"
        ):
            by = views.get(conv.waiting_by) if conv.waiting_by else None
            at = by.t if by else (conv.resolved_at or conv.last_at)
            out.append(("waiting_changed", f"{conv.waiting_on}:{conv.waiting_by}", at, by, {}))
        return out

    def _clock_changes(self, conv: Conversation, p: dict, views: dict, keys: list[str]) -> list[tuple]:
        """SLA clocks withdrawn, started and stopped (hit or breached) since ``p``.

        A reader knows a clock by kind and start alone (the event's ``sla``), so two clocks of one
        kind and start (``kind:start`` and ``kind:start#2``: resolved and reopened in the same
        instant) are one clock to it, and a late contact that moves one of them renumbers the other
        (``#2`` becomes the first). The withdrawals come first, and every kind and start this
        change touches ends with an event of the last clock that has it (re-sent if it did not
        change), so a withdrawn ``#n`` never stands over a clock that is still there."""
        # back from merged_into: every clock is announced again, and those published before the
        # merge that are gone now are withdrawn
        known, gone = ({}, p.get("kx", {})) if p["st"] == "merged_into" else (p["k"], p["k"])
        out: list[tuple] = []
        for key, entry in sorted(gone.items()):
            if key not in keys:  # taken back by a late contact: its earlier events no longer stand
                kind, started = key.split("#", 1)[0].rsplit(":", 1)
                last, end = published_clock(entry)
                out.append(
                    (
                        "sla_withdrawn",
                        key,
                        int(started),
                        None,
                        {"clock": withdrawn_clock(kind, int(started), last, end, entry)},
                    )
                )
        for key, clock in zip(keys, conv.clocks):
            before, before_end = published_clock(known.get(key))
            # announced when it starts, and again when a late contact takes back its stop (a reply or
            # a pause before its due time): it runs (or is paused) again
            if before is None or (before in ("hit", "breached") and clock.state not in ("hit", "breached")):
                out.append(self._started(conv, key, clock, views))
            # a stopped clock is (re)announced when it stops, and again when a late contact moves
            # the time it stopped at (an earlier reply, a pause), so the event that stands says when
            if clock.state in ("hit", "breached") and (
                before != clock.state or (before_end is not None and before_end != clock.end)
            ):
                out.append(self._stopped(key, clock))
        if not any(e[0] == "sla_withdrawn" for e in out) and not any("#" in key for key in keys):
            return out  # one clock per kind and start, each event naming it: none to re-send
        standing = {(c.kind, c.started): (key, c) for key, c in zip(keys, conv.clocks)}  # the last one wins
        said = {(e[4]["clock"].kind, e[4]["clock"].started): e[4]["clock"] for e in out}
        for named, clock in said.items():
            if named in standing and standing[named][1] is not clock:
                name, stands = standing[named]
                out.append(
                    self._stopped(name, stands)
                    if stands.state in ("hit", "breached")
                    else self._started(conv, name, stands, views)
                )
        return out

    def _started(self, conv: Conversation, key: str, clock: Clock, views: dict) -> tuple:
        return ("sla_started", key, clock.started, views.get(self._starter(conv, clock, views)), {"clock": clock})

    @staticmethod
    def _stopped(key: str, clock: Clock) -> tuple:
        return ("sla_" + ("hit" if clock.state == "hit" else "breached"), key, clock.end, None, {"clock": clock})

    @staticmethod
    def _starter(conv: Conversation, clock: Clock, views: dict) -> str | None:
        return next((e for e in conv.contacts if views[e].t == clock.started and views[e].role == CUSTOMER), None)

    def _snapshot(self, conv: Conversation) -> dict:
        nxt = conv.next_clock(self.hours)
        return {
            "status": conv.status,
            "opened_at": conv.opened_at,
            "messages": len(conv.contacts),
            "breaches": conv.breaches,
            "waiting_on": conv.waiting_on,
            "open_sla": nxt.record(conv.last_at, self.hours) if nxt else None,
        }

    def _ended(
        self, state: dict, cid: str, p: dict, target: str | None, to_customer: str | None, facts: list[dict]
    ) -> list[dict]:
        v = p["v"] + 1
        subject = f"{target or ''}:{to_customer or ''}"
        base = uuid5_str(CONVERSATION_NS, f"{cid}:merged_into:{subject}")
        eid = base if _short(base) not in p["e"] else uuid5_str(CONVERSATION_NS, f"{base}:{v}")
        at = p["la"]
        snapshot = {
            "status": "merged_into",
            "opened_at": p["o"],
            "messages": 0,
            "breaches": 0,
            "waiting_on": "nobody",
            "open_sla": None,
        }
        ev = self._event(
            state,
            cid,
            "merged_into",
            eid,
            at,
            at,
            version=v,
            contact=None,
            channel=p.get("ch"),
            previous=None,
            sla_record=None,
            snapshot=snapshot,
            facts=facts,
        )
        ev["merged_into"] = target
        ev["merged_into_customer_id"] = to_customer
        state["pub"][cid] = {
            **p,
            "v": v,
            "c": [],
            "sw": [],
            "ro": [],
            "st": "merged_into",
            "k": {},
            "kx": p["k"],
            "w": ["nobody", None],
            "e": sorted({*p["e"], _short(base)}),
            "n": 0,
            "b": 0,
            "s": snapshot,
        }
        return [ev]

    def _event(
        self,
        state: dict,
        cid: str,
        etype: str,
        eid: str,
        at: int,
        recorded: int,
        *,
        version: int,
        contact: ContactView | None,
        channel: str | None,
        previous: str | None,
        sla_record: dict | None,
        snapshot: dict,
        facts: list[dict],
    ) -> dict:
        return {
            "event_id": eid,
            "event_type": etype,
            "occurred_at": at,
            "recorded_at": recorded,
            "customer_id": state["customer_id"],
            "conversation_id": cid,
            "channel": channel,
            "previous_channel": previous,
            "contact_event_id": contact.event_id if contact else None,
            "waiting_on": snapshot["waiting_on"],
            "sla": sla_record,
            "facts": facts,
            "version": version,
            "status": snapshot["status"],
            "opened_at": snapshot["opened_at"],
            "messages": snapshot["messages"],
            "breaches": snapshot["breaches"],
            "open_sla": snapshot["open_sla"],
            "merged_into": None,
            "merged_into_customer_id": None,
        }

    # -- facts, archive, freezing ------------------------------------------------------------

    @staticmethod
    def _facts(state: dict, contacts: list[ContactView]) -> list[dict]:
        """The customer's facts: the frozen ones plus those of the live contacts, first seen first
        (event time); one language, the latest."""
        known: dict[tuple[str, str], tuple] = {tuple(k.split("\x1f", 1)): tuple(v) for k, v in state["facts"].items()}
        for c in contacts:
            for kind, value, source in c.facts:
                k = (kind, "") if kind == "language" else (kind, value)
                cand = (c.t, c.event_id, value, source)
                have = known.get(k)
                if (
                    have is None
                    or (kind == "language" and cand[:2] > have[:2])
                    or (kind != "language" and cand[:2] < have[:2])
                ):
                    known[k] = cand
        ordered = sorted((t, eid, k, value, source) for k, (t, eid, value, source) in known.items())  # keys unique
        return [{"kind": k[0], "value": value, "source": source} for _t, _eid, k, value, source in ordered]

    def _archive(self, state: dict, c: ContactView) -> list[dict]:
        """A contact at or before the frozen horizon: appended to a frozen conversation (the one
        whose span holds its time, else the latest that opened before it, else the first)."""
        frozen = state["frozen"]
        holder = next((f for f in frozen if f["o"] <= c.t <= (f["ra"] or f["la"])), None)
        holder = holder or next((f for f in reversed(frozen) if f["o"] <= c.t), None) or frozen[0]
        holder["n"] += 1
        holder["v"] += 1
        state["old_ids"] = [*state["old_ids"], c.event_id][-MAX_OLD_IDS:]
        for kind, value, source in c.facts:
            k = f"{kind}\x1f{'' if kind == 'language' else value}"
            if k not in state["facts"]:
                state["facts"][k] = [c.t, c.event_id, value, source]
        facts = self._facts(state, [ContactView.from_row(r) for r in state["contacts"]])
        snapshot = {
            "status": "resolved",
            "opened_at": holder["o"],
            "messages": holder["n"],
            "breaches": holder["b"],
            "waiting_on": "nobody",
            "open_sla": None,
        }
        eid = uuid5_str(CONVERSATION_NS, f"{holder['id']}:message_appended:{c.event_id}")
        return [
            self._event(
                state,
                holder["id"],
                "message_appended",
                eid,
                c.t,
                max(c.t, c.recorded),
                version=holder["v"],
                contact=c,
                channel=c.channel,
                previous=None,
                sla_record=None,
                snapshot=snapshot,
                facts=facts,
            )
        ]

    def _freeze(self, state: dict, convs: list[Conversation], views: dict) -> None:
        wm, keep = state["wm"], self.rules.retention_seconds * 1000
        if wm is None:
            return
        convs = sorted(convs, key=lambda cv: (cv.opened_at, cv.id))
        while convs:
            conv, rest = convs[0], convs[1:]
            if conv.status != "resolved" or wm - conv.resolved_at <= keep:
                break
            if rest and conv.last_at >= min(cv.opened_at for cv in rest):
                break
            p = state["pub"].pop(conv.id, None) or {"v": 0}
            state["frozen"] = [
                *state["frozen"],
                {
                    "id": conv.id,
                    "o": conv.opened_at,
                    "la": conv.last_at,
                    "ra": conv.resolved_at,
                    "n": len(conv.contacts),
                    "b": conv.breaches,
                    "v": p["v"],
                },
            ][-MAX_FROZEN:]
            ids = set(conv.contacts)
            for c in (views[e] for e in conv.contacts):
                for kind, value, source in c.facts:
                    k = f"{kind}\x1f{'' if kind == 'language' else value}"
                    have = state["facts"].get(k)
                    if have is None or (kind == "language" and [c.t, c.event_id] > have[:2]):
                        state["facts"][k] = [c.t, c.event_id, value, source]
            state["contacts"] = [r for r in state["contacts"] if r[0] not in ids]
            state["old_ids"] = [*state["old_ids"], *conv.contacts][-MAX_OLD_IDS:]
            state["horizon"] = max(state["horizon"] or conv.last_at, conv.last_at)
            convs = rest
        # merged-away conversations leave the published map once they are older than the retention
        for cid in [k for k, p in state["pub"].items() if p["st"] == "merged_into" and wm - p["la"] > keep]:
            del state["pub"][cid]

    def _remember(self, state: dict, key: str, events: list[dict]) -> None:
        """Keep the events of the last few changes, compactly (``_pack``: values in EVENT_KEYS
        order, each event after the first as what differs from the one before, the customer's facts
        once), so that a redelivery re-sends the same events and no new ones. Each entry is kept as
        its JSON text: half of a state's bytes, read back only by a redelivery, so reading and
        writing the state parse and build a few strings instead of every value of every entry."""
        outbox = state["outbox"]
        outbox[key] = orjson.dumps(_pack(events)).decode()
        while len(outbox) > self.rules.outbox:
            outbox.pop(next(iter(outbox)))


# -- reading the difference back ----------------------------------------------------------------

SNAPSHOT_FIELDS = ("status", "opened_at", "messages", "breaches", "waiting_on", "open_sla")


def fold(events) -> dict[str, dict]:
    """Conversation id → its state, from conversation events in any order and with duplicates: the
    event with the highest version of each conversation wins. Merged-away conversations are left out."""
    latest: dict[str, dict] = {}
    for e in events:
        have = latest.get(e["conversation_id"])
        if have is None or e["version"] > have["version"]:
            latest[e["conversation_id"]] = e
    return {cid: {k: e[k] for k in SNAPSHOT_FIELDS} for cid, e in latest.items() if e["status"] != "merged_into"}


def snapshots(convs: list[Conversation], rules: StitchRules) -> dict[str, dict]:
    """What ``fold`` gives for conversations computed in one pass."""
    st = Stitcher(rules)
    return {conv.id: st._snapshot(conv) for conv in convs}
