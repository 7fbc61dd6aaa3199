"""The consent ledger (pure): every consent signal a customer gave, per purpose and channel, in
event time (docs/privacy.md). Signals come from contacts (web forms, reviews, explicit consent
events through the gateway); a withdrawal is a signal with ``granted`` false.

* ``ledger``: every signal, in event-time order (occurred_at, then event id): the same whatever
  order the contacts arrived in;
* ``current``: the latest signal per (purpose, channel) by event time;
* ``withdrawn``: whether the customer's latest signal for a purpose, on any channel, withdrew it.
  Marketing read models honour it: a customer who withdrew marketing consent has no segments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

MARKETING = "marketing"
PURPOSES = (MARKETING, "profiling", "support")


@dataclass(frozen=True)
class Signal:
    purpose: str
    channel: str  # "any" when the signal named none
    granted: bool
    source: str | None
    signal_at: datetime  # event time of the contact that carried it
    event_id: str  # the evidence: that contact
    contact_channel: str | None = None
    connector: str | None = None

    def order(self) -> tuple:
        return (self.signal_at, self.event_id, self.purpose, self.channel, self.granted)

    def as_json(self) -> dict:
        out = asdict(self)
        out["signal_at"] = self.signal_at.isoformat()
        return out


def from_row(row: dict) -> Signal:
    """A ledger row of the read model (``signal_at`` a datetime or its ISO text, as the API's rows give it)."""
    at = row["signal_at"]
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    return Signal(
        str(row["purpose"]),
        str(row.get("channel") or "any"),
        bool(row["granted"]),
        row.get("source"),
        at,
        str(row["event_id"]),
        row.get("contact_channel"),
        row.get("connector"),
    )


def ledger(signals: Iterable[Signal]) -> list[Signal]:
    return sorted(set(signals), key=Signal.order)


def current(signals: Iterable[Signal]) -> dict[tuple[str, str], Signal]:
    out: dict[tuple[str, str], Signal] = {}
    for s in ledger(signals):
        out[(s.purpose, s.channel)] = s
    return out


def withdrawn(signals: Iterable[Signal], purpose: str = MARKETING) -> bool:
    mine = [s for s in ledger(signals) if s.purpose == purpose]
    return bool(mine) and not mine[-1].granted
