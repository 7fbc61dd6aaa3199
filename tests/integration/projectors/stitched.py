"""Conversation events v2 as the stream worker publishes them: the pure core of
streams/conversations.py run per customer, contacts in the order they arrive, identity moves as
the worker applies them. Then published with the project's codec and projected."""

from __future__ import annotations

from dataclasses import dataclass, field

from projector_events import identity, produce
from projectors.engine.runner import Sources
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets
from streams.conversations import Stitcher
from streams.rules import StitchRules


@dataclass
class Worker:
    """One customer state per customer id, the events in the order the worker would emit them."""

    rules: StitchRules = field(default_factory=StitchRules)
    states: dict = field(default_factory=dict)
    contacts: list = field(default_factory=list)  # as written to contacts.resolved.v1
    events: list = field(default_factory=list)  # conversations.v1
    identities: list = field(default_factory=list)  # identities.v1
    gen: int = 0

    def __post_init__(self):
        self.stitcher = Stitcher(self.rules)

    def contact(self, record: dict, gen: int = 0, wm: int | None = None) -> list[dict]:
        cid = record["customer_id"]
        self.states[cid], events = self.stitcher.apply(self.states.get(cid), record, wm=wm, gen=gen)
        self.contacts.append(record)
        self.events += events
        return events

    def advance(self, customer_id: str, wm: int) -> list[dict]:
        self.states[customer_id], events = self.stitcher.advance(self.states[customer_id], wm)
        self.events += events
        return events

    def move(self, records: list[dict], to_customer: str, *, merge: bool) -> None:
        """Identity re-keys ``records`` to ``to_customer`` (a merge, or an unmerge): the old
        customer gets the ``moved`` command, each contact comes again under the new id."""
        self.gen += 1
        old = records[0]["customer_id"]
        at = max(r["occurred_at"] for r in records)
        self.states[old], events = self.stitcher.remove(
            self.states.get(old), [r["event_id"] for r in records], to_customer, gen=self.gen
        )
        self.events += events
        for r in records:
            self.contact({**r, "customer_id": to_customer}, gen=self.gen)
        if merge:
            self.identities.append(identity("merged", to_customer, at, related=[old]))
        else:
            self.identities.append(identity("unmerged", old, at, related=[to_customer]))


def publish(settings, codec, sources: Sources, worker: Worker, events: list[dict] | None = None) -> None:
    produce(settings, codec, sources.contacts, "contact", worker.contacts)
    produce(settings, codec, sources.conversations, "conversation", worker.events if events is None else events)
    if worker.identities:
        produce(settings, codec, sources.identities, "identity", worker.identities)


def project(settings, sources: Sources, projections=("support",), codec=None) -> None:
    targets = end_offsets(settings, sources.topics())
    for p in projections:
        read_model_projector(settings, p, sources=sources, codec=codec).run(stop_at=targets)
