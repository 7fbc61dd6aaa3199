"""Row shaping: decoded events → the rows the projections write. Pure, no I/O.

Every row is a function of its event alone (plus where it was read), so replaying the log gives
the same rows: the basis of rebuild-equals-live. The merge/unmerge state is a function of the
set of alias edges (``roots``), so it does not depend on the order partitions are read in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from projectors.sentiment import sentiment
from threadline.errors import DecodeError

CONTACT = "threadline.contact.Contact"
CONVERSATION_EVENT = "threadline.conversation.ConversationEvent"
IDENTITY_EVENT = "threadline.identity.IdentityEvent"

CONTACT_COLUMNS = (
    "event_id",
    "origin_customer_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "connector",
    "channel",
    "direction",
    "actor_role",
    "department",
    "subject",
    "text",
    "language",
    "sentiment",
    "rating",
    "platform",
    "identities",
    "facts",
    "consent",
    "attachments",
    "thread",
    "metadata",
    "source_partition",
    "source_offset",
    "resolved_gen",
)
CONVERSATION_COLUMNS = (
    "event_id",
    "origin_customer_id",
    "conversation_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "channel",
    "previous_channel",
    "contact_event_id",
    "waiting_on",
    "sla_kind",
    "sla_target_seconds",
    "sla_started_at",
    "sla_due_at",
    "sla_elapsed_seconds",
    "facts",
    "source_partition",
    "source_offset",
    "version",
    "status",
    "state_opened_at",
    "state_messages",
    "state_breaches",
    "sla_state",
    "open_sla_kind",
    "open_sla_due_at",
    "merged_into",
    "merged_into_customer_id",
)
IDENTITY_EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "customer_id",
    "identities",
    "related_customer_ids",
    "rule",
    "reason",
    "source_event_id",
    "source_partition",
    "source_offset",
)
IDENTITY_COLUMNS = ("origin_customer_id", "kind", "platform", "value", "first_seen_at", "last_seen_at")
OWNER_COLUMNS = ("kind", "platform", "value", "customer_id", "gen")
CUSTOMER_COLUMNS = ("origin_customer_id", "first_seen_at")


# What PostgreSQL cannot store in text or jsonb: NUL (0x00), and surrogate code points, which a
# Python str only holds unpaired (they have no UTF-8 encoding). Each becomes U+FFFD.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
_search = UNSTORABLE.search


def _unstorable(value) -> bool:
    """Whether any string in ``value`` (keys too, at any depth) holds a character of UNSTORABLE."""
    t = type(value)
    if t is str:
        return _search(value) is not None
    if t is dict:
        for k, v in value.items():
            if (type(k) is str and _search(k) is not None) or _unstorable(v):
                return True
    elif t is list:
        for v in value:
            if _unstorable(v):
                return True
    return False


def _clean(value):
    if type(value) is str:
        return UNSTORABLE.sub(REPLACEMENT, value)
    if type(value) is dict:
        return {_clean(k): _clean(v) for k, v in value.items()}
    if type(value) is list:
        return [_clean(v) for v in value]
    return value


_dumps = orjson.dumps
_NUL_ESCAPE = b"\\u0000"


def _surely_storable(value) -> bool:
    """A quick sufficient test (one C call instead of a walk in Python): orjson refuses a string
    with an unpaired surrogate and writes NUL as the escape ``\\u0000``, so a value it writes
    without that escape holds neither. False means "look closer" (``_unstorable``): the escape
    may be a backslash followed by ``u0000`` in the text, or orjson may refuse the value for
    another reason (a non-string key, an integer beyond 64 bits)."""
    try:
        return _NUL_ESCAPE not in _dumps(value)
    except TypeError:  # orjson.JSONEncodeError is one
        return False


def storable(value):
    """``value`` with every string (keys too, at any depth) made storable in PostgreSQL text and
    jsonb: each character it rejects becomes U+FFFD, everything else is kept. A value that needs
    no change comes back as it is (no copy)."""
    if _surely_storable(value):
        return value
    return _clean(value) if _unstorable(value) else value


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
_encode = _ENCODER.encode  # one encoder for every row (json.dumps builds one per call with these options)
# orjson writes what the json encoder writes for these values (jsonb columns: the text's layout is
# not kept anyway); what it would write differently or not at all, it is told to refuse
# (datetimes, dataclasses: the json encoder refuses them too), and the json encoder decides.
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _json(v) -> str:
    try:
        return _dumps(v, option=_ORJSON).decode()
    except TypeError:  # a non-string key, an integer beyond 64 bits, a value JSON has no form for
        return _encode(v)


def rating_of(metadata: dict[str, str] | None) -> int | None:
    """A review's star rating from the provider's metadata (``rating``: 1..5), else None."""
    raw = (metadata or {}).get("rating")
    try:
        value = int(float(raw)) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and 1 <= value <= 5 else None


def resolution_gen(headers) -> int:
    """The order of a contact's resolutions: the identity graph's position that assigned it to the
    record's customer (header ``gen`` of contacts.resolved.v1, written by the identity stage on the
    first resolution and on every re-keying by a merge or an unmerge). A record without it (a writer
    from before the header) counts as position 0; a header that is not a whole number is refused."""
    for key, value in headers or ():
        if key == "gen":
            try:
                return int(value)
            except (TypeError, ValueError):
                raise DecodeError(f"header gen of a resolved contact is not an integer: {value[:40]!r}") from None
    return 0


def supersedes(new: tuple, old: tuple) -> bool:
    """Whether contact row ``new`` replaces ``old`` (two resolutions of one contact): the latest
    resolution wins, by (``resolved_gen``, customer id), never by arrival, so the rows are the same
    whatever order the partitions of contacts.resolved.v1 are read in. The stores apply the same
    comparison in SQL (``projectors/read_models.py``, ``projectors/contacts.py``)."""
    return (new[_GEN], new[_CUSTOMER]) > (old[_GEN], old[_CUSTOMER])


def latest_resolutions(rows: list[tuple]) -> list[tuple]:
    """One row per contact event id: the one no other row of that contact supersedes (first
    appearance order kept)."""
    out: dict[str, tuple] = {}
    for row in rows:
        old = out.get(row[0])
        if old is None or supersedes(row, old):
            out[row[0]] = row
    return list(out.values())


def contact_row(r: dict, partition: int, offset: int, gen: int = 0) -> tuple:
    if not r.get("customer_id"):
        raise DecodeError("contact without customer_id: projections read contacts.resolved.v1")
    actor = r.get("actor") or {}
    identities = r.get("identities") or []
    primary = next((i for i in identities if i.get("primary")), identities[0] if identities else {})
    return (
        r["event_id"],
        r["customer_id"],
        r.get("event_type") or "contact.received",
        r["occurred_at"],
        r["recorded_at"],
        r["connector"],
        r["channel"],
        r["direction"],
        actor.get("role") or "customer",
        actor.get("department"),
        r.get("subject"),
        r.get("text"),
        r.get("language"),
        sentiment(r.get("text"), r.get("language")),
        rating_of(r.get("metadata")),
        primary.get("platform"),
        _json(identities),
        _json(r.get("facts") or []),
        _json(r.get("consent") or []),
        _json(r.get("attachments") or []),
        _json(r.get("thread") or {}),
        _json(r.get("metadata") or {}),
        partition,
        offset,
        gen,
    )


_GEN = CONTACT_COLUMNS.index("resolved_gen")
_CUSTOMER = CONTACT_COLUMNS.index("origin_customer_id")


def conversation_row(r: dict, partition: int, offset: int) -> tuple:
    """A conversation event as a row. v2 events carry the conversation's ``version`` and its state
    after the event (status, opened_at, messages, breaches, the running clock that falls due first,
    where it was merged into); v1 events have version 0 and none of that."""
    sla = r.get("sla") or {}
    open_sla = r.get("open_sla") or {}
    return (
        r["event_id"],
        r["customer_id"],
        r["conversation_id"],
        r["event_type"],
        r["occurred_at"],
        r["recorded_at"],
        r.get("channel"),
        r.get("previous_channel"),
        r.get("contact_event_id"),
        r.get("waiting_on"),
        sla.get("kind"),
        sla.get("target_seconds"),
        sla.get("started_at"),
        sla.get("due_at"),
        sla.get("elapsed_seconds"),
        _json(r.get("facts") or []),
        partition,
        offset,
        r.get("version") or 0,
        r.get("status"),
        r.get("opened_at"),
        r.get("messages"),
        r.get("breaches"),
        sla.get("state"),
        open_sla.get("kind"),
        open_sla.get("due_at"),
        r.get("merged_into"),
        r.get("merged_into_customer_id"),
    )


def identity_event_row(r: dict, partition: int, offset: int) -> tuple:
    return (
        r["event_id"],
        r["event_type"],
        r["occurred_at"],
        r["recorded_at"],
        r["customer_id"],
        _json(r.get("identities") or []),
        list(r.get("related_customer_ids") or []),
        r.get("rule"),
        r.get("reason"),
        r.get("source_event_id"),
        partition,
        offset,
    )


def identity_rows(customer_id: str, identities: list[dict], at: datetime) -> list[tuple]:
    """(origin customer, kind, platform, value, first seen, last seen) for lookups by identity."""
    return [(customer_id, i["kind"], i.get("platform") or "", i["value"], at, at) for i in identities]


# The events whose ``identities`` the graph gave their customer at their position: the new nodes
# of a customer (observed, linked, merged). link_rejected names identities that were refused.
OWNING_EVENTS = frozenset({"observed", "linked", "merged"})


def identity_owners(r: dict) -> list[tuple]:
    """(kind, platform, value, customer, graph position): which customer each identity an
    identities.v1 event names belongs to as of the event's position ``gen`` (v2): the identities it
    gave its customer, and the ``moved_identities`` of a merge or an unmerge (to the customer they
    joined). An event without a position (v1) says nothing about owners."""
    gen = r.get("gen")
    if gen is None:
        return []
    out = []
    if r["event_type"] in OWNING_EVENTS:
        out = [
            (i["kind"], i.get("platform") or "", i["value"], r["customer_id"], gen) for i in r.get("identities") or []
        ]
    for m in r.get("moved_identities") or []:
        out.append((m["kind"], m.get("platform") or "", m["value"], m["to_customer_id"], gen))
    return out


def owner_supersedes(new: tuple, old: tuple) -> bool:
    """Whether owner row ``new`` replaces ``old`` (of one identity): the later graph position wins,
    then the greater customer id (one position gives an identity one customer; the tie-break only
    makes the order of reading irrelevant). The store applies the same comparison in SQL."""
    return (new[4], new[3]) > (old[4], old[3])


def latest_owners(rows: list[tuple]) -> list[tuple]:
    """One owner row per identity: the one no other row of that identity supersedes."""
    out: dict[tuple, tuple] = {}
    for row in rows:
        key = row[:3]
        old = out.get(key)
        if old is None or owner_supersedes(row, old):
            out[key] = row
    return list(out.values())


@dataclass(frozen=True)
class AliasOp:
    """``add``: ``absorbed`` now points to ``survivor`` (merge); ``remove``: the edge is gone (unmerge)."""

    action: str
    absorbed: str
    survivor: str
    event_id: str
    occurred_at: datetime
    gen: int = 0  # the identity graph's position (identities.v1 v2); 0: an event without one


def alias_op_applies(op: AliasOp, edge: tuple[int, bool] | None) -> bool:
    """Whether merge or unmerge ``op`` changes an edge whose latest operation was at graph position
    ``edge[0]`` and left it active or not (``edge[1]``; None: no edge yet). A later position wins,
    so an older event read late (from another partition, or a contact's events sent again on its
    redelivery) changes nothing; operations without a position (0) apply in the order they are
    read, as long as none with a position touched the edge."""
    if edge is None:
        return True
    gen, active = edge
    return op.gen > gen or (op.gen == gen == 0 and active != (op.action == "add"))


# The reason the identity graph gives the events of an operator's unlink. The split-off customer's
# event is ``merged`` with the old customer as related (its identities came from there), but the
# old customer lives on: nothing is absorbed, only the ``unmerged`` edge removal applies.
SPLIT_REASONS = frozenset({"unlinked_by_operator"})


def alias_ops(r: dict) -> list[AliasOp]:
    kind = r["event_type"]
    if kind not in ("merged", "unmerged"):
        return []
    if kind == "merged" and r.get("reason") in SPLIT_REASONS:
        return []
    action = "add" if kind == "merged" else "remove"
    return [
        AliasOp(action, other, r["customer_id"], r["event_id"], r["occurred_at"], r.get("gen") or 0)
        for other in r.get("related_customer_ids") or []
        if other != r["customer_id"]
    ]


def roots(edges: set[tuple[str, str]]) -> dict[str, str]:
    """The customer every id in ``edges`` (absorbed, survivor) stands for today.

    Follows survivor links to the end; where an id has several survivors (merged twice from
    different partitions), the smallest id wins, so the answer does not depend on arrival order.
    A cycle (a merge back and forth without an unmerge) resolves to its smallest member.
    """
    parent: dict[str, str] = {}
    for absorbed, survivor in sorted(edges):
        parent.setdefault(absorbed, survivor)
    out: dict[str, str] = {}
    nodes = {n for e in edges for n in e}
    for node in nodes:
        seen = [node]
        cur = node
        while cur in parent and parent[cur] not in seen:
            cur = parent[cur]
            seen.append(cur)
        if cur in parent:  # stopped on a cycle
            cycle_start = seen.index(parent[cur])
            cur = min(seen[cycle_start:])
        out[node] = cur
    return out


def within_as_of(record: dict, as_of: datetime | None) -> bool:
    """Time travel by event time: an event counts if it happened at or before ``as_of``."""
    return as_of is None or record["occurred_at"] <= as_of


@dataclass
class Batch:
    """What one poll turns into, grouped by table, in the order the log gave it."""

    contacts: list[tuple] = field(default_factory=list)
    conversations: list[tuple] = field(default_factory=list)
    identity_events: list[tuple] = field(default_factory=list)
    identities: list[tuple] = field(default_factory=list)
    owners: list[tuple] = field(default_factory=list)
    customers: list[tuple] = field(default_factory=list)
    alias_ops: list[AliasOp] = field(default_factory=list)
    # customers whose identities the store moved while writing the batch (their profiles change)
    touched: set[str] = field(default_factory=set)
    skipped_as_of: int = 0

    def __len__(self) -> int:
        return len(self.contacts) + len(self.conversations) + len(self.identity_events)

    def extend(self, other: Batch) -> None:
        """Append ``other``'s rows after this batch's own (log order is kept)."""
        for name in ("contacts", "conversations", "identity_events", "identities", "owners", "customers", "alias_ops"):
            getattr(self, name).extend(getattr(other, name))
        self.touched |= other.touched
        self.skipped_as_of += other.skipped_as_of

    def add(
        self,
        schema_fullname: str,
        record: dict,
        partition: int,
        offset: int,
        as_of: datetime | None = None,
        gen: int = 0,
    ) -> None:
        """Shape one decoded record (``gen``: a resolved contact's ``resolution_gen``); raises
        DecodeError for a record no projection can use."""
        if not within_as_of(record, as_of):
            self.skipped_as_of += 1
            return
        record = storable(record)
        if schema_fullname == CONTACT:
            self.contacts.append(contact_row(record, partition, offset, gen))
            cid = record["customer_id"]
            self.identities += identity_rows(cid, record.get("identities") or [], record["occurred_at"])
            self.customers.append((cid, record["occurred_at"]))
        elif schema_fullname == CONVERSATION_EVENT:
            self.conversations.append(conversation_row(record, partition, offset))
            self.customers.append((record["customer_id"], record["occurred_at"]))
        elif schema_fullname == IDENTITY_EVENT:
            self.identity_events.append(identity_event_row(record, partition, offset))
            cid = record["customer_id"]
            self.identities += identity_rows(cid, record.get("identities") or [], record["occurred_at"])
            self.owners += identity_owners(record)
            self.customers.append((cid, record["occurred_at"]))
            for other in record.get("related_customer_ids") or []:
                self.customers.append((other, record["occurred_at"]))
            self.alias_ops += alias_ops(record)
        else:
            raise DecodeError(f"no projection reads {schema_fullname} records")
