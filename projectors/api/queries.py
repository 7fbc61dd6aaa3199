"""The read API's SQL, by route; ``s`` is the projection schema read (``support``, ``sales``,
``marketing`` with the deployment's prefix). Every list names its order (``Order``), which is
also its cursor's key: stable, and unique thanks to the id that ends it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    expr: str  # an SQL expression of the listed rows
    cast: str  # its type, to compare a cursor's value with
    descending: bool = False


@dataclass(frozen=True)
class Order:
    """The ORDER BY of a list, and the keyset predicate ``after`` that starts after a row."""

    name: str
    keys: tuple[Key, ...]

    def order_by(self) -> str:
        return ", ".join(f"{k.expr}{' desc' if k.descending else ''}" for k in self.keys)

    def key_columns(self) -> str:
        return ", ".join(f"({k.expr})::text as _cursor_{i}" for i, k in enumerate(self.keys))

    def after(self) -> str:
        """Rows after the one whose keys are ``%(c0)s, %(c1)s, ...``: (k0 > c0) or (k0 = c0 and k1 > c1) ..."""
        terms = []
        for i, k in enumerate(self.keys):
            equal = [f"{p.expr} = %(c{j})s::{p.cast}" for j, p in enumerate(self.keys[:i])]
            equal.append(f"{k.expr} {'<' if k.descending else '>'} %(c{i})s::{k.cast}")
            terms.append("(" + " and ".join(equal) + ")")
        return "(" + " or ".join(terms) + ")"


BY_TIME = (Key("occurred_at", "timestamptz"), Key("event_id", "uuid"))
CONTACTS = Order("contacts", BY_TIME)
TIMELINE = Order("timeline", BY_TIME)
CONVERSATIONS = Order(
    "conversations", (Key("last_event_at", "timestamptz", descending=True), Key("conversation_id", "text"))
)
INBOX = Order(
    "inbox",
    (
        Key("coalesce(sla_due_at, 'infinity')", "timestamptz"),
        Key("last_event_at", "timestamptz"),
        Key("conversation_id", "text"),
    ),
)
ENGAGEMENT = Order("engagement", (Key("day", "date"), Key("channel", "text")))
REVIEWS = Order("reviews", (Key("occurred_at", "timestamptz", descending=True), Key("event_id", "uuid")))

# -- contacts (skeleton.contacts) -------------------------------------------------------------
CONTACT_COLUMNS = (
    "event_id, customer_id, connector, channel, direction, occurred_at, recorded_at, text, "
    "record->'facts' as facts, record->'identities' as identities, "
    "source_topic, source_partition, source_offset"
)
CONTACT = f"select {CONTACT_COLUMNS} from skeleton.contacts where event_id = %(event_id)s"
CUSTOMER_CONTACTS = f"select {CONTACT_COLUMNS}, {{keys}} from skeleton.contacts where customer_id = %(customer_id)s"
ALL_CONTACTS = f"select {CONTACT_COLUMNS}, {{keys}} from skeleton.contacts where true"


# -- customers ------------------------------------------------------------------------------
def resolve(s: str) -> str:
    return f"select customer_id from {s}.customers where origin_customer_id = %(customer_id)s"


def resolved(s: str) -> str:
    """The customer ``%(customer_id)s`` stands for today, as an array for ``= any(...)``: a read
    resolves a merged id in the same statement, not in a round trip of its own."""
    return f"array({resolve(s)})"


# -- support --------------------------------------------------------------------------------
def timeline(s: str) -> str:
    return (
        f"select *, {{keys}} from {s}.timeline where customer_id = %(customer_id)s"
        " and (%(channel)s::text is null or channel = %(channel)s)"
    )


def customer_conversations(s: str) -> str:
    return (
        f"select *, {{keys}} from {s}.conversation_state where customer_id = %(customer_id)s"
        " and (%(state)s::text is null or state = %(state)s)"
    )


def conversation(s: str) -> str:
    return f"select * from {s}.conversation_state where conversation_id = %(conversation_id)s"


def conversation_events(s: str) -> str:
    return (
        f"select event_id, event_type, version, occurred_at, channel, previous_channel, contact_event_id,"
        f" waiting_on, sla_kind, sla_due_at, sla_elapsed_seconds, sla_state from {s}.conversation_events"
        " where conversation_id = %(conversation_id)s order by version, occurred_at, event_id"
    )


def conversation_contacts(s: str) -> str:
    return (
        f"select contact_event_id as event_id, occurred_at, channel from {s}.conversation_messages"
        " where conversation_id = %(conversation_id)s order by occurred_at, contact_event_id"
    )


def inbox(s: str) -> str:
    return (
        f"select *, {{keys}} from {s}.inbox where (%(sla_state)s::text is null or sla_state = %(sla_state)s)"
        " and (%(channel)s::text is null or channel = %(channel)s)"
        " and (%(waiting_on)s::text is null or waiting_on = %(waiting_on)s)"
    )


# -- sales ----------------------------------------------------------------------------------
def customer_360(s: str) -> str:
    """The 360 row of the customer ``%(customer_id)s`` stands for today (a merged id: its survivor's)."""
    return f"select * from {s}.customer_360 where customer_id = any({resolved(s)})"


# -- marketing ------------------------------------------------------------------------------
def engagement(s: str) -> str:
    return (
        f"select *, {{keys}} from {s}.engagement_daily where (%(from)s::date is null or day >= %(from)s)"
        " and (%(to)s::date is null or day < %(to)s) and (%(channel)s::text is null or channel = %(channel)s)"
    )


def response_times(s: str) -> str:
    return f"select * from {s}.response_times order by channel"


def reviews(s: str) -> str:
    return (
        f"select *, {{keys}} from {s}.reviews where (%(min_rating)s::int is null or rating >= %(min_rating)s)"
        " and (%(max_rating)s::int is null or rating <= %(max_rating)s)"
        " and (%(customer_id)s::text is null or customer_id = %(customer_id)s)"
    )


def consent(s: str) -> str:
    return (
        f"select channel, purpose, granted, source, signal_at, event_id from {s}.consent_latest"
        " where customer_id = %(customer_id)s order by channel, purpose"
    )


def consent_signals(s: str) -> str:
    """Every consent signal of a customer's contacts, with the contact that carried it (the consent
    ledger, ``projectors/consent.py``, orders them in event time)."""
    return (
        "select x->>'purpose' as purpose, coalesce(x->>'channel', 'any') as channel,"
        " (x->>'granted')::boolean as granted, x->>'source' as source, c.occurred_at as signal_at,"
        " c.event_id::text as event_id, c.channel as contact_channel, c.connector"
        f" from {s}.v_contacts c cross join lateral jsonb_array_elements(c.consent) x"
        " where c.customer_id = %(customer_id)s and x ? 'purpose' and x ? 'granted'"
    )


def customer_signals(s: str) -> str:
    return f"select * from {s}.customer_signals where customer_id = %(customer_id)s"
