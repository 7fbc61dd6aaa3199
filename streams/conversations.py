"""Conversation stitching and SLA clocks per customer (pure rules, no I/O).

State is one JSON dict per customer (a table value keyed by customer_id in the worker):

* One conversation follows the customer across channels: a contact within the inactivity window
  (per channel, of the conversation's latest channel) continues the open conversation whatever
  its channel; a change of channel is a ``channel_switched`` event.
* Lifecycle: ``opened`` → waiting on agent / waiting on customer (``waiting_changed``) →
  ``resolved`` (a contact of type ``contact.resolved`` / ``conversation.resolved`` or metadata
  ``conversation_status=resolved``) → ``reopened`` by a contact within the reopen window; after that,
  a new conversation. An open conversation that stays quiet longer than its window is resolved
  at the end of its window when the next conversation opens.
* An email reply (In-Reply-To, References) or a social reply (reply_to_id) to a message of an
  earlier conversation joins that conversation, reopening it if it was resolved.
* Event time throughout: a contact is placed by when it happened. Out-of-order contacts within
  the grace (``StitchRules.grace_seconds`` behind the customer's latest event time) land in the
  conversation their time falls in and move its clocks (an earlier first contact restarts the
  first-response clock at its own time); later ones are appended to the conversation their time
  falls in without changing lifecycle or clocks. Replaying the same log gives the same events.
* Facts the customer gave (order numbers, account, address, preferences, language) accumulate
  per customer and travel on every conversation event.
* SLA clocks (``streams.sla``): first response from the first inbound customer contact to the
  first agent reply; next response from each later inbound contact to the next reply;
  resolution from the first contact to resolution, paused while waiting on the customer. Targets
  per channel. A clock that passes its due time is breached by the next contact after it (event
  time) or by the timer (``tick``), whichever comes first; each clock reports once.
* Effectively once: a contact already seen changes nothing; the events it produced are kept in a
  small outbox and given again, so a redelivery after a crash re-sends the same event ids and
  never new ones.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass

from streams import sla
from streams.identity import to_millis
from streams.rules import StitchRules

CONVERSATION_NS = uuid.UUID("3a9c1e7f-5b2d-5c4e-9a8f-1d6b3e2c7a90")
RESOLVING_TYPES = frozenset({"contact.resolved", "conversation.resolved"})
NO_SLA_CHANNELS = frozenset({"store"})
MAX_CONVERSATIONS = 20
MAX_MESSAGE_IDS = 500


@dataclass(frozen=True)
class ContactView:
    event_id: str
    t: int
    recorded: int
    channel: str
    inbound_customer: bool
    agent_reply: bool
    resolves: bool
    message_ids: tuple[str, ...]
    refs: tuple[str, ...]
    facts: tuple[tuple[str, str, str | None], ...]


def view(contact: dict) -> ContactView:
    actor = contact.get("actor") or {}
    role, direction = actor.get("role", "customer"), contact.get("direction", "inbound")
    thread = contact.get("thread") or {}
    facts = [(f["kind"], f["value"], f.get("source")) for f in contact.get("facts") or []]
    if contact.get("language"):
        facts.append(("language", contact["language"], "contact.language"))
    meta = contact.get("metadata") or {}
    ids = [x for x in (thread.get("message_id"), contact.get("provider_id")) if x]
    refs = [x for x in (thread.get("in_reply_to"), *(thread.get("references") or []), thread.get("reply_to_id")) if x]
    return ContactView(
        event_id=contact["event_id"], t=to_millis(contact["occurred_at"]),
        recorded=to_millis(contact.get("recorded_at") or contact["occurred_at"]),
        channel=contact.get("channel") or "other",
        inbound_customer=direction == "inbound" and role == "customer",
        agent_reply=direction == "outbound" and role == "agent",
        resolves=contact.get("event_type") in RESOLVING_TYPES or meta.get("conversation_status") == "resolved",
        message_ids=tuple(ids), refs=tuple(refs), facts=tuple(facts))


def _copy(state: dict) -> dict:
    """A deep copy of a JSON state (several times faster than copy.deepcopy)."""
    return json.loads(json.dumps(state))


def new_state(customer_id: str) -> dict:
    return {"customer_id": customer_id, "seen": [], "facts": [], "wm": None, "convs": [], "msgs": {},
            "outbox": {}, "retired": None}


class Stitcher:
    def __init__(self, rules: StitchRules | None = None):
        self.rules = rules or StitchRules()
        self.hours = self.rules.business_hours

    # -- entry points ----------------------------------------------------------------------

    def apply(self, state: dict | None, contact: dict) -> tuple[dict, list[dict]]:
        """One resolved contact: the new state and the conversation events it causes."""
        c = view(contact)
        if state and c.event_id in state["outbox"]:
            return state, copy.deepcopy(state["outbox"][c.event_id])
        if state and c.event_id in state["seen"]:
            return state, []
        state = _copy(state) if state else new_state(contact["customer_id"])
        state["retired"] = None
        late = state["wm"] is not None and state["wm"] - c.t > self.rules.grace_seconds * 1000
        events: list[dict] = [] if late else self._breaches(state, c.t, c.recorded, by_time=True)
        self._learn_facts(state, c)
        conv, how = self._place(state, c, late, events)
        conv["msgs"] = conv.get("msgs", 0) + 1
        if how == "reopen":
            conv.update(status="open", resolved_at=None)
            events.append(self._ev(state, conv, "reopened", c.t, c.recorded, contact=c, channel=c.channel))
        if not late and how != "new" and conv["channel"] != c.channel and c.t >= conv["last_at"]:
            events.append(self._ev(state, conv, "channel_switched", c.t, c.recorded, contact=c, channel=c.channel,
                                   prev=conv["channel"]))
        if c.t >= conv["last_at"]:
            conv["channel"] = c.channel
        conv["last_at"] = max(conv["last_at"], c.t)
        conv["opened_at"] = min(conv["opened_at"], c.t)
        events.append(self._ev(state, conv, "message_appended", c.t, c.recorded, contact=c, channel=c.channel))
        if not late:
            events += self._lifecycle(state, conv, c)
        for mid in c.message_ids:
            state["msgs"][mid] = conv["id"]
        state["wm"] = max(state["wm"] or c.t, c.t)
        self._remember(state, c.event_id, events)
        return state, events

    def tick(self, state: dict, now_ms: int) -> tuple[dict, list[dict]]:
        """The timer: breach every running clock whose due time (plus the timer grace) has passed."""
        state = _copy(state)
        events = self._breaches(state, now_ms - self.rules.timer_grace_seconds * 1000, now_ms, by_time=False)
        return state, events

    def retire(self, state: dict | None, survivor: str, at: int | None = None,
               recorded: int | None = None) -> tuple[dict, list[dict]]:
        """The customer was merged into ``survivor``: its clocks stop without a word (its contacts
        are re-keyed to the survivor, whose state carries them on), and each conversation still
        open is resolved at the merge, so read models do not keep showing it open beside the
        survivor's conversation that now holds its contacts."""
        state = _copy(state) if state else new_state(survivor)
        events: list[dict] = []
        for conv in state["convs"]:
            for kind, clock in conv["clocks"].items():
                conv["clocks"][kind] = {**clock, "state": "retired", "since": None}
            if conv["status"] == "open" and at is not None:
                conv.update(status="resolved", resolved_at=at, waiting_on="nobody")
                events.append(self._ev(state, conv, "resolved", at, recorded or at, channel=conv["channel"]))
        state["retired"] = survivor
        return state, events

    def next_due(self, state: dict) -> int | None:
        """When the earliest running, not yet breached clock falls due (for the timer's index)."""
        dues = [sla.due(clock, self.hours) for conv in state["convs"] for clock in conv["clocks"].values()
                if not clock["breach_emitted"]]
        dues = [d for d in dues if d is not None]
        return min(dues) if dues else None

    # -- placement -------------------------------------------------------------------------

    def _place(self, state: dict, c: ContactView, late: bool, events: list[dict]) -> tuple[dict, str]:
        convs = state["convs"]
        by_id = {cv["id"]: cv for cv in convs}
        for ref in c.refs:
            joined = by_id.get(state["msgs"].get(ref))
            if joined is not None:
                return joined, ("reopen" if joined["status"] == "resolved" and not late else "thread")
        if not convs:
            return self._open(state, c, events), "new"
        before = [cv for cv in convs if cv["opened_at"] <= c.t]
        cand = before[-1] if before else convs[0]
        if late or cand["opened_at"] <= c.t <= cand["last_at"]:
            return cand, "continue"
        if c.t < cand["opened_at"]:
            if cand["opened_at"] - c.t <= self.rules.window(c.channel) * 1000:
                return cand, "continue"
            return self._open(state, c, events), "new"
        if cand["status"] == "open" and c.t - cand["last_at"] <= self.rules.window(cand["channel"]) * 1000:
            return cand, "continue"
        if cand["status"] == "resolved" and c.t - cand["resolved_at"] <= self.rules.reopen_seconds * 1000:
            return cand, "reopen"
        if cand["status"] == "open":  # quiet longer than its window: resolved at the window's end
            end = cand["last_at"] + self.rules.window(cand["channel"]) * 1000
            events += self._resolve(state, cand, end, c.recorded, None)
        return self._open(state, c, events), "new"

    def _open(self, state: dict, c: ContactView, events: list[dict]) -> dict:
        conv = {"id": str(uuid.uuid5(CONVERSATION_NS, f"{state['customer_id']}:{c.event_id}")),
                "opened_at": c.t, "last_at": c.t, "channel": c.channel, "status": "open", "resolved_at": None,
                "waiting_on": "nobody", "clocks": {}}
        state["convs"] = sorted([*state["convs"], conv], key=lambda cv: cv["opened_at"])[-MAX_CONVERSATIONS:]
        events.append(self._ev(state, conv, "opened", c.t, c.recorded, contact=c, channel=c.channel))
        return conv

    # -- lifecycle and clocks ----------------------------------------------------------------

    def _lifecycle(self, state: dict, conv: dict, c: ContactView) -> list[dict]:
        out: list[dict] = []
        clocks = conv["clocks"]
        if c.resolves:
            return self._resolve(state, conv, c.t, c.recorded, c)
        target = None if c.channel in NO_SLA_CHANNELS else self.rules.target(c.channel)
        if c.inbound_customer:
            out += self._waiting(state, conv, "agent", c)
            if target is not None:
                fr = clocks.get("first_response")
                if fr is None or (fr["state"] == "running" and c.t < fr["started"]):
                    out += self._start(state, conv, "first_response", target, c)
                elif fr["state"] in ("hit", "breached"):
                    nr = clocks.get("next_response")
                    if nr is None or nr["state"] in ("hit", "breached", "retired"):
                        out += self._start(state, conv, "next_response", target, c)
                res = clocks.get("resolution")
                if res is None or res["state"] in ("hit", "breached", "retired") or (
                        res["state"] == "running" and c.t < res["started"]):
                    out += self._start(state, conv, "resolution", self.rules.resolution_seconds, c)
                elif res["state"] == "paused":
                    clocks["resolution"] = sla.resume(res, c.t)
        elif c.agent_reply:
            out += self._waiting(state, conv, "customer", c)
            for kind in ("first_response", "next_response"):
                if kind in clocks and clocks[kind]["state"] == "running":
                    out += self._stop(state, conv, kind, c.t, c.recorded, c)
            if "resolution" in clocks:
                clocks["resolution"] = sla.pause(clocks["resolution"], c.t, self.hours)
        return out

    def _waiting(self, state, conv, on: str, c: ContactView) -> list[dict]:
        if conv["waiting_on"] == on:
            return []
        conv["waiting_on"] = on
        return [self._ev(state, conv, "waiting_changed", c.t, c.recorded, contact=c, channel=c.channel)]

    def _start(self, state, conv, kind: str, target: int, c: ContactView) -> list[dict]:
        clock = sla.new_clock(kind, target, c.t)
        conv["clocks"][kind] = clock
        return [self._ev(state, conv, "sla_started", c.t, c.recorded, contact=c, channel=c.channel,
                         sla_record=sla.record(clock, c.t, self.hours))]

    def _stop(self, state, conv, kind: str, at: int, recorded: int, c: ContactView | None) -> list[dict]:
        clock, what = sla.stop(conv["clocks"][kind], at, self.hours)
        conv["clocks"][kind] = clock
        if what is None:
            return []
        return [self._ev(state, conv, what, at, recorded, contact=c, channel=c.channel if c else conv["channel"],
                         sla_record=sla.record(clock, at, self.hours))]

    def _resolve(self, state, conv, at: int, recorded: int, c: ContactView | None) -> list[dict]:
        out = []
        for kind in ("first_response", "next_response", "resolution"):
            if kind in conv["clocks"] and conv["clocks"][kind]["state"] in ("running", "paused"):
                if conv["clocks"][kind]["state"] == "paused":
                    conv["clocks"][kind] = sla.resume(conv["clocks"][kind], at)
                out += self._stop(state, conv, kind, at, recorded, c)
        conv.update(status="resolved", resolved_at=at, waiting_on="nobody")
        out.append(self._ev(state, conv, "resolved", at, recorded, contact=c, channel=c.channel if c else conv["channel"]))
        return out

    def _breaches(self, state: dict, upto: int, recorded: int, *, by_time: bool) -> list[dict]:
        out = []
        for conv in state["convs"]:
            for kind, clock in conv["clocks"].items():
                d = sla.due(clock, self.hours)
                if d is None or clock["breach_emitted"] or (d >= upto if by_time else d > upto):
                    continue
                conv["clocks"][kind] = {**clock, "breach_emitted": True}
                out.append(self._ev(state, conv, "sla_breached", d, max(recorded, d), channel=conv["channel"],
                                    sla_record=sla.record(clock, d, self.hours)))
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _learn_facts(self, state: dict, c: ContactView) -> None:
        known = {(f[0], f[1]) for f in state["facts"]}
        for kind, value, source in c.facts:
            if kind == "language":
                state["facts"] = [f for f in state["facts"] if f[0] != "language"]
            elif (kind, value) in known:
                continue
            state["facts"].append([kind, value, source])
            known.add((kind, value))

    def _remember(self, state: dict, event_id: str, events: list[dict]) -> None:
        state["seen"] = [*state["seen"], event_id][-self.rules.max_seen_ids:]
        outbox = state["outbox"]
        outbox[event_id] = events  # fresh dicts, never changed after this
        while len(outbox) > self.rules.outbox:
            outbox.pop(next(iter(outbox)))
        while len(state["msgs"]) > MAX_MESSAGE_IDS:
            state["msgs"].pop(next(iter(state["msgs"])))

    def _ev(self, state: dict, conv: dict, event_type: str, at: int, recorded: int, *,
            contact: ContactView | None = None, channel: str | None = None, prev: str | None = None,
            sla_record: dict | None = None) -> dict:
        cid = contact.event_id if contact else ""
        clock = f"{sla_record['kind']}:{sla_record['started_at']}" if sla_record else ""
        return {
            "event_id": str(uuid.uuid5(CONVERSATION_NS, f"{conv['id']}:{event_type}:{cid}:{clock}")),
            "event_type": event_type, "occurred_at": at, "recorded_at": recorded,
            "customer_id": state["customer_id"], "conversation_id": conv["id"], "channel": channel,
            "previous_channel": prev, "contact_event_id": contact.event_id if contact else None,
            "waiting_on": conv["waiting_on"], "sla": sla_record,
            "facts": [{"kind": k, "value": v, "source": s} for k, v, s in state["facts"]],
        }
