"""What the read models count, defined once: pure functions and the SQL views rendered from them.

Support's card, sales' card, the "talk to support first" flag and marketing's signals all read
these definitions, so one customer shows one set of numbers everywhere:

* **support contact** — a contact the customer started on a support channel: inbound, by the
  customer (an agent's, a bot's or the system's message never counts), on any channel but
  ``NON_SUPPORT_CHANNELS`` (reviews are marketing's, store orders sales'), meant for support (no
  department, or ``support``). The contacts of one call (``thread.call_id``: ringing, completed,
  its transcription) are one contact. Each is counted once, in the conversation it was appended
  to (``support_contacts.conversation_id``).
* **breached SLA** — an SLA clock (conversation, kind, started at) that passed its due time before
  it stopped: a ``sla_breached`` event, or a clock still running in an open conversation whose
  due time is past. It was breached *at its due time*; a window counts the breaches whose due
  time falls in it, whatever happened to the conversation since.
* **sentiment** — the customer's own words only: scores of inbound customer contacts (never an
  agent's reply). ``recent`` is the average of the last ``RECENT_DAYS``, ``prior`` of the
  ``WINDOW_DAYS - RECENT_DAYS`` days before, ``avg_30d`` of the whole window, ``latest`` the last
  score. The trend compares recent with prior; with no scored contact before the recent window the
  baseline is neutral (0.0), so a first complaint reads as worsening, not as unknown.

A window of ``days`` is ``(now - days, now]``, ``now`` being the schema's clock (``now()``, or the
``as_of`` time of a time-travel build).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

NON_SUPPORT_CHANNELS = ("review", "store")
SUPPORT_DEPARTMENT = "support"
RECENT_DAYS = 7
WINDOW_DAYS = 30
NEUTRAL = 0.0
TREND_DELTA = 0.2  # a change of average sentiment smaller than this is "stable"


# -- support contacts ---------------------------------------------------------------------------


def is_customer_voice(*, direction: str, actor_role: str | None) -> bool:
    """Words of the customer: inbound and by the customer (a missing role is the customer's)."""
    return direction == "inbound" and (actor_role or "customer") == "customer"


def is_support_contact(*, direction: str, actor_role: str | None, channel: str, department: str | None) -> bool:
    return (
        is_customer_voice(direction=direction, actor_role=actor_role)
        and channel not in NON_SUPPORT_CHANNELS
        and (department or SUPPORT_DEPARTMENT) == SUPPORT_DEPARTMENT
    )


def contact_key(event_id: str, thread: dict | None) -> str:
    """What makes one contact: a call's contacts share their call id; any other is itself."""
    return (thread or {}).get("call_id") or str(event_id)


def in_window(at: datetime | None, now: datetime, days: int) -> bool:
    return at is not None and now - timedelta(days=days) < at <= now


def count_support_contacts(contacts: Iterable[dict], now: datetime, days: int) -> int:
    """``contacts``: rows with the columns ``is_support_contact`` reads, ``occurred_at``,
    ``event_id`` and ``thread``."""
    return len(
        {
            contact_key(c["event_id"], c.get("thread"))
            for c in contacts
            if in_window(c["occurred_at"], now, days)
            and is_support_contact(
                direction=c["direction"],
                actor_role=c.get("actor_role"),
                channel=c["channel"],
                department=c.get("department"),
            )
        }
    )


# -- SLA breaches -------------------------------------------------------------------------------


def breached_at(
    *, due_at: datetime | None, reported_breach: bool, stopped: bool, conversation_open: bool, now: datetime
) -> datetime | None:
    """When one SLA clock was breached (its due time), or None if it was not (yet)."""
    if due_at is None:
        return None
    if reported_breach or (not stopped and conversation_open and due_at < now):
        return due_at
    return None


# -- sentiment ----------------------------------------------------------------------------------


def sentiment_trend(recent: float | None, prior: float | None) -> str:
    """``improving`` / ``worsening`` / ``stable`` comparing the recent average with the prior one
    (neutral when there is none); ``unknown`` when the recent window has no scored contact."""
    if recent is None:
        return "unknown"
    baseline = NEUTRAL if prior is None else prior
    if recent - baseline >= TREND_DELTA:
        return "improving"
    if baseline - recent >= TREND_DELTA:
        return "worsening"
    return "stable"


@dataclass(frozen=True)
class Sentiment:
    latest: float | None
    recent_7d: float | None
    prior_23d: float | None
    avg_30d: float | None

    @property
    def trend(self) -> str:
        return sentiment_trend(self.recent_7d, self.prior_23d)

    def as_dict(self) -> dict:
        return {
            "latest": self.latest,
            "recent_7d": self.recent_7d,
            "prior_23d": self.prior_23d,
            "avg_30d": self.avg_30d,
            "baseline": "prior" if self.prior_23d is not None else "neutral",
            "trend": self.trend,
        }


def _avg(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def sentiment_of(contacts: Iterable[dict], now: datetime) -> Sentiment:
    """From rows with ``direction``, ``actor_role``, ``occurred_at``, ``event_id``, ``sentiment``."""
    scored = sorted(
        (
            (c["occurred_at"], str(c["event_id"]), c["sentiment"])
            for c in contacts
            if c.get("sentiment") is not None
            and c["occurred_at"] <= now
            and is_customer_voice(direction=c["direction"], actor_role=c.get("actor_role"))
        )
    )
    recent = [s for at, _, s in scored if in_window(at, now, RECENT_DAYS)]
    whole = [s for at, _, s in scored if in_window(at, now, WINDOW_DAYS)]
    prior = [s for at, _, s in scored if in_window(at, now, WINDOW_DAYS) and not in_window(at, now, RECENT_DAYS)]
    return Sentiment(scored[-1][2] if scored else None, _avg(recent), _avg(prior), _avg(whole))


# -- the same definitions as SQL views (one per schema, read by every audience's views) ----------


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def customer_voice_sql(alias: str) -> str:
    return f"{alias}.direction = 'inbound' and coalesce({alias}.actor_role, 'customer') = 'customer'"


def support_contact_sql(alias: str) -> str:
    return (
        f"{customer_voice_sql(alias)} and {alias}.channel not in ({_sql_list(NON_SUPPORT_CHANNELS)})"
        f" and coalesce({alias}.department, '{SUPPORT_DEPARTMENT}') = '{SUPPORT_DEPARTMENT}'"
    )


def window_sql(column: str, days: int) -> str:
    return (
        f"({column} > (select now from {{s}}.clock) - interval '{int(days)} days'"
        f" and {column} <= (select now from {{s}}.clock))"
    )


def views_sql() -> str:
    """The definition views, to be ``.format(s=schema)``-ed after the tables and ``conversation_state``."""
    recent, whole = window_sql("occurred_at", RECENT_DAYS), window_sql("occurred_at", WINDOW_DAYS)
    return f"""
-- Definitions (projectors/definitions.py): support contacts, SLA breaches, the customer's sentiment.
create view {{s}}.support_contacts as
    select c.customer_id, c.event_id, c.occurred_at, c.channel,
           coalesce(c.thread->>'call_id', c.event_id::text) as contact_key,
           (select e.conversation_id from {{s}}.conversation_events e where e.contact_event_id = c.event_id::text
            order by e.occurred_at, e.event_id limit 1) as conversation_id
    from {{s}}.v_contacts c where {support_contact_sql("c")};

create view {{s}}.sla_breaches as
    -- the clocks and what their events say: projectors/aggregates.py (sla_clocks, kept per batch)
    select cs.customer_id, k.conversation_id, k.sla_kind, k.sla_started_at, k.due_at as breached_at,
           k.reported_breach as reported
    from {{s}}.sla_clocks k join {{s}}.conversation_state cs using (conversation_id)
    where k.due_at is not null and not k.withdrawn and cs.state <> 'merged_into'  -- a merged-away conversation's clocks count once, where its contacts are
      and (k.reported_breach or (not k.stopped and cs.state = 'open' and k.due_at < (select now from {{s}}.clock)));

create view {{s}}.customer_sentiment as
    select customer_id,
           (array_agg(sentiment order by occurred_at desc, event_id desc))[1] as latest,
           round(avg(sentiment) filter (where {recent})::numeric, 3)::float8 as recent_7d,
           round(avg(sentiment) filter (where {whole} and not {recent})::numeric, 3)::float8 as prior_23d,
           round(avg(sentiment) filter (where {whole})::numeric, 3)::float8 as avg_30d
    from {{s}}.v_contacts c
    where {customer_voice_sql("c")} and sentiment is not null and occurred_at <= (select now from {{s}}.clock)
    group by customer_id;
"""
