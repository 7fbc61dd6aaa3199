"""The read models of support, sales and marketing as a projection of the engine
(``projectors/engine/runner.py``): shaped ``rows.Batch`` es written into one projection schema.

``Store`` writes a batch: COPY into staging tables and upsert from there (no round trip per row),
re-point merged customers, recompute the conversations the batch touched and the aggregates of
what it touched. A rebuild's first pass into its own schema (which nobody reads until the swap)
defers that derived part: the batches write the rows only, and ``Store.finish`` computes the
conversations and the aggregates once, set-based, from every row (``deferred``). ``ReadModel`` adds the
schema's lifecycle (the live schema made on first use, the build checked under the swap lock in
every batch's transaction) and, for the live support projection, the customer-profiles outbox.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from projectors import aggregates, ddl
from projectors.engine import schema as schemas_
from projectors.engine.runner import DEFAULT_BATCH, Projector, Sources
from projectors.profiles import Publisher
from projectors.rows import (
    CONTACT,
    CONTACT_COLUMNS,
    CONVERSATION_COLUMNS,
    IDENTITY_COLUMNS,
    IDENTITY_EVENT_COLUMNS,
    OWNER_COLUMNS,
    AliasOp,
    Batch,
    alias_op_applies,
    latest_owners,
    latest_resolutions,
    resolution_gen,
    roots,
)
from schemas.codec import Codec, make_codec
from schemas.keystore import make_store
from threadline.errors import ConfigError
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.projector")

# The tables a batch writes rows into (the rest derive from them).
ROW_TABLES = ("contacts", "conversation_events", "identity_events", "customer_identities", "customers")


def seen_spans(identities: list[tuple]) -> list[tuple]:
    """One identity row per (customer, kind, platform, value): first seen the earliest, last seen
    the latest (what the upsert's grouping makes of them; a customer's contacts repeat them)."""
    out: dict[tuple, list] = {}
    for cid, kind, platform, value, first, last in identities:
        key = (cid, kind, platform, value)
        span = out.get(key)
        if span is None:
            out[key] = [first, last]
        else:
            if first < span[0]:
                span[0] = first
            if last > span[1]:
                span[1] = last
    return [(*key, first, last) for key, (first, last) in out.items()]


def first_seen(customers: list[tuple]) -> list[tuple]:
    """One row per customer id, with the earliest time it was seen."""
    out: dict[str, datetime] = {}
    for cid, at in customers:
        if cid not in out or at < out[cid]:
            out[cid] = at
    return list(out.items())


def copy_rows(cur, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    with cur.copy(f"copy {table} ({', '.join(columns)}) from stdin") as cp:
        for row in rows:
            cp.write_row(row)


class Store:
    """Writes a shaped Batch into one projection schema, inside the caller's transaction.

    ``deferred``: the batches write the rows (contacts, events, identities, customers, aliases)
    but not what is derived from them (conversations, their messages, the aggregate tables);
    ``finish`` computes those once from every row, then the store goes on incrementally. Only for
    a schema nobody reads before ``finish`` (a rebuild's build)."""

    def __init__(self, schema: str, *, deferred: bool = False):
        self.s = ddl.check_ident(schema)
        self.deferred = deferred
        self._unindexed: list[str] | None = None  # the indexes a deferred pass dropped, as created
        self._keyless = False  # a deferred pass copies contacts into the table without its primary key

    def prepare(self, cur) -> None:
        """Before a deferred pass's first batch, committed on its own (``ReadModel.prepare``): a
        batch's write runs in a savepoint that a refused record rolls back, and what it undid
        must not be taken as done. A deferred pass writes into tables without their lookup indexes
        (each made once, from every row, in ``finish``: a sort, not a b-tree insert per row; kept:
        the unique ones, which the upserts' conflicts need) and copies contacts straight into
        their table without its primary key (``_keep_latest_resolutions`` in ``finish``)."""
        if self.deferred and self._unindexed is None:
            self._drop_lookup_indexes(cur)

    def _drop_lookup_indexes(self, cur) -> None:
        self._unindexed = [
            definition
            for name, definition in cur.execute(
                "select i.indexname, i.indexdef from pg_indexes i join pg_class c on c.relname = i.indexname"
                " join pg_namespace n on n.oid = c.relnamespace and n.nspname = i.schemaname"
                " join pg_index x on x.indexrelid = c.oid where i.schemaname = %s and i.tablename = any(%s)"
                " and not x.indisunique order by i.indexname",
                (self.s, list(ROW_TABLES)),
            )
        ]
        for definition in self._unindexed:
            name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
            cur.execute(f"drop index {self.s}.{ddl.check_ident(name)}")
        # contacts: copied straight into the table, each contact's latest resolution kept once in finish
        cur.execute(f"alter table {self.s}.contacts drop constraint contacts_pkey")
        self._keyless = True

    def _keep_latest_resolutions(self, cur) -> None:
        """After a deferred pass: of each contact's rows, the one ``rows.latest_resolutions`` keeps
        (the highest resolution by ``rows.supersedes``; among equal ones the first read, which is
        the lowest offset: a contact's resolutions to one customer share its partition), then the
        primary key back."""
        s = self.s
        cur.execute(
            f"delete from {s}.contacts c using (select ctid from (select ctid, row_number() over (partition by event_id"
            " order by resolved_gen desc, origin_customer_id desc, source_partition, source_offset) as n"
            f" from {s}.contacts) ranked where n > 1) later where c.ctid = later.ctid"
        )
        cur.execute(f"alter table {s}.contacts add constraint contacts_pkey primary key (event_id)")
        self._keyless = False

    def finish(self, cur) -> None:
        """The lookup indexes a deferred pass left out, then the derived tables from every row
        (the conversations of every conversation event, then every aggregate:
        ``aggregates.refresh``); the store writes incrementally from now on."""
        s = self.s
        if self._keyless:
            self._keep_latest_resolutions(cur)
        for definition in self._unindexed or ():
            cur.execute(definition)
        self._unindexed = None
        ids = [cid for (cid,) in cur.execute(f"select distinct conversation_id from {s}.conversation_events")]
        if ids:
            for sql in ddl.RECOMPUTE_MESSAGES:
                cur.execute(sql.format(s=s), {"ids": ids})
            cur.execute(ddl.RECOMPUTE_CONVERSATIONS.format(s=s), {"ids": ids})
        aggregates.refresh(cur, s)
        self.deferred = False

    def _copy(self, cur, table: str, columns: tuple[str, ...], rows: list[tuple], *, like: str | None = None) -> None:
        stage = f"_stage_{table}"
        if like:
            cur.execute(f"create temp table if not exists {stage} (like {self.s}.{like}) on commit delete rows")
        copy_rows(cur, stage, columns, rows)

    def _facts(self, cur, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Events are facts: written once, a duplicate delivery changes nothing."""
        if not rows:
            return
        self._copy(cur, table, columns, rows, like=table)
        cols = ", ".join(columns)
        cur.execute(
            f"insert into {self.s}.{table} ({cols}) select distinct on (event_id) {cols} from _stage_{table}"
            f" order by event_id, source_partition, source_offset on conflict (event_id) do nothing"
        )

    def _contacts(self, cur, rows: list[tuple]) -> set[str]:
        """A contact's row is the one of its latest resolution (``rows.supersedes``: by the identity
        graph's position, then customer id), whatever order its resolutions are read in: a contact
        that a merge or an unmerge moved is listed under the customer it belongs to now. Returns the
        origin customer ids that rows left (their aggregates change)."""
        if not rows:
            return set()
        s = self.s
        if self._keyless:  # a deferred pass: every row as it comes, the latest resolutions in finish
            copy_rows(cur, f"{s}.contacts", CONTACT_COLUMNS, rows)
            return set()
        self._copy(cur, "contacts", CONTACT_COLUMNS, latest_resolutions(rows), like="contacts")
        cols = ", ".join(CONTACT_COLUMNS)
        left = (
            set()
            if self.deferred  # no aggregate is kept yet
            else {
                origin
                for (origin,) in cur.execute(
                    f"select distinct c.origin_customer_id from {s}.contacts c join _stage_contacts st using (event_id)"
                    " where (c.resolved_gen, c.origin_customer_id) < (st.resolved_gen, st.origin_customer_id)"
                )
            }
        )
        cur.execute(
            f"insert into {s}.contacts ({cols}) select {cols} from _stage_contacts on conflict (event_id) do update set"
            " origin_customer_id = excluded.origin_customer_id, resolved_gen = excluded.resolved_gen,"
            " source_partition = excluded.source_partition, source_offset = excluded.source_offset"
            f" where ({s}.contacts.resolved_gen, {s}.contacts.origin_customer_id)"
            " < (excluded.resolved_gen, excluded.origin_customer_id)"
        )
        return left

    def write(self, cur, batch: Batch) -> None:
        s = self.s
        left = self._contacts(cur, batch.contacts)
        self._facts(cur, "conversation_events", CONVERSATION_COLUMNS, batch.conversations)
        self._facts(cur, "identity_events", IDENTITY_EVENT_COLUMNS, batch.identity_events)
        self._identities(cur, batch)
        if batch.customers:
            cur.execute(
                "create temp table if not exists _stage_customers"
                " (origin_customer_id text, first_seen_at timestamptz) on commit delete rows"
            )
            self._copy(cur, "customers", ("origin_customer_id", "first_seen_at"), first_seen(batch.customers))
            cur.execute(
                f"insert into {s}.customers select st.origin_customer_id,"
                f" coalesce((select a.root_id from {s}.customer_alias a where a.customer_id = st.origin_customer_id and a.active"
                f" order by a.survivor_id limit 1), st.origin_customer_id), min(st.first_seen_at)"
                f" from _stage_customers st group by st.origin_customer_id"
                f" on conflict (origin_customer_id) do update set"
                f" first_seen_at = least({s}.customers.first_seen_at, excluded.first_seen_at)"
            )
        moved = self._repoint(cur, batch) if batch.alias_ops else set()
        if self.deferred:  # conversations and aggregates: once, in finish()
            return
        if batch.conversations:
            ids = sorted({r[2] for r in batch.conversations})
            for sql in ddl.RECOMPUTE_MESSAGES:
                cur.execute(sql.format(s=s), {"ids": ids})
            cur.execute(ddl.RECOMPUTE_CONVERSATIONS.format(s=s), {"ids": ids})
            aggregates.conversations_changed(cur, s, ids)
        if batch.contacts:
            aggregates.contacts_arrived(cur, s, [r[0] for r in batch.contacts])
            origins = sorted({r[1] for r in batch.contacts} | left)
            moved |= {
                cid
                for (cid,) in cur.execute(
                    f"select distinct customer_id from {s}.customers where origin_customer_id = any(%s)", (origins,)
                )
            }
        aggregates.customers_changed(cur, s, moved)

    _MERGE_SEEN = (
        " on conflict (kind, platform, value, origin_customer_id) do update set"
        " first_seen_at = least({s}.customer_identities.first_seen_at, excluded.first_seen_at),"
        " last_seen_at = greatest({s}.customer_identities.last_seen_at, excluded.last_seen_at)"
    )

    def _identities(self, cur, batch: Batch) -> None:
        """Owners first (``rows.identity_owners``: the latest graph position wins, whatever order
        they are read in, so a redelivered or late event never moves an identity back), then the
        batch's identity rows, each under the owner of its identity if it has one (else the
        customer its record names), then the rows of the identities whose owner the batch named that
        sit under another customer are folded into the owner's row (first and last seen kept).
        The customers an identity left or joined go to ``batch.touched``."""
        s = self.s
        if batch.owners:
            self._copy(cur, "identity_owners", OWNER_COLUMNS, latest_owners(batch.owners), like="identity_owners")
            cur.execute(
                f"insert into {s}.identity_owners ({', '.join(OWNER_COLUMNS)})"
                f" select {', '.join(OWNER_COLUMNS)} from _stage_identity_owners"
                " on conflict (kind, platform, value) do update set customer_id = excluded.customer_id, gen = excluded.gen"
                f" where ({s}.identity_owners.gen, {s}.identity_owners.customer_id) < (excluded.gen, excluded.customer_id)"
            )
        if batch.identities:
            self._copy(
                cur, "customer_identities", IDENTITY_COLUMNS, seen_spans(batch.identities), like="customer_identities"
            )
            batch.touched |= {
                owner
                for (owner,) in cur.execute(
                    f"insert into {s}.customer_identities select coalesce(o.customer_id, st.origin_customer_id),"
                    " st.kind, st.platform, st.value, min(st.first_seen_at), max(st.last_seen_at)"
                    f" from _stage_customer_identities st left join {s}.identity_owners o using (kind, platform, value)"
                    " group by 1, 2, 3, 4" + self._MERGE_SEEN.format(s=s) + " returning origin_customer_id"
                )
            }
        if batch.owners:
            for left, owner in cur.execute(
                f"with gone as (delete from {s}.customer_identities i using {s}.identity_owners o"
                " where (o.kind, o.platform, o.value) in (select kind, platform, value from _stage_identity_owners)"
                " and i.kind = o.kind and i.platform = o.platform and i.value = o.value"
                " and i.origin_customer_id <> o.customer_id"
                " returning i.origin_customer_id, o.customer_id as owner, i.kind, i.platform, i.value,"
                " i.first_seen_at, i.last_seen_at),"
                f" kept as (insert into {s}.customer_identities select owner, kind, platform, value,"
                " min(first_seen_at), max(last_seen_at) from gone group by 1, 2, 3, 4"
                + self._MERGE_SEEN.format(s=s)
                + ") select distinct origin_customer_id, owner from gone"
            ):
                batch.touched |= {left, owner}

    def _repoint(self, cur, batch: Batch) -> set[str]:
        """Apply merges and unmerges in log order where ``rows.alias_op_applies`` (a later graph
        position wins; an unmerge leaves its edge inactive), then point every affected id at its root.
        Returns the customer ids whose contacts changed hands (each re-pointed id's customer before
        and after)."""
        s = self.s
        state = {
            (a, b): (gen, active)
            for a, b, gen, active in cur.execute(
                f"select customer_id, survivor_id, gen, active from {s}.customer_alias"
            )
        }
        before = {edge for edge, (_, active) in state.items() if active}
        changed: dict[tuple[str, str], AliasOp] = {}
        for op in batch.alias_ops:  # in log order
            edge = (op.absorbed, op.survivor)
            if alias_op_applies(op, state.get(edge)):
                state[edge] = (op.gen, op.action == "add")
                changed[edge] = op
        for (absorbed, survivor), op in changed.items():
            cur.execute(
                f"insert into {s}.customer_alias (customer_id, survivor_id, root_id, event_id, occurred_at, gen, active)"
                " values (%s, %s, %s, %s, %s, %s, %s) on conflict (customer_id, survivor_id) do update set"
                " event_id = excluded.event_id, occurred_at = excluded.occurred_at, gen = excluded.gen,"
                " active = excluded.active",
                (absorbed, survivor, survivor, op.event_id, op.occurred_at, op.gen, op.action == "add"),
            )
        after = {edge for edge, (_, active) in state.items() if active}
        root = roots(after)
        affected = sorted({n for e in before | after for n in e})
        targets = [root.get(n, n) for n in affected]
        cur.execute(
            f"update {s}.customer_alias a set root_id = u.r from unnest(%s::text[], %s::text[]) as u(n, r)"
            f" where a.customer_id = u.n and a.root_id is distinct from u.r",
            (affected, targets),
        )
        moved = {
            cid
            for pair in cur.execute(
                f"update {s}.customers c set customer_id = u.r from unnest(%s::text[], %s::text[]) as u(n, r),"
                f" {s}.customers before where c.origin_customer_id = u.n and c.customer_id is distinct from u.r"
                f" and before.origin_customer_id = c.origin_customer_id returning before.customer_id, c.customer_id",
                (affected, targets),
            )
            for cid in pair
        }
        log.info(
            "customers_repointed",
            schema=s,
            ids=len(affected),
            merges=sum(op.action == "add" for op in batch.alias_ops),
            unmerges=sum(op.action == "remove" for op in batch.alias_ops),
        )
        return moved


class ReadModel:
    """The ``projection`` (support, sales, marketing) written into ``schema``, tracked as ``name``.
    ``create``: make the live schema on first use (a rebuild makes its own). ``as_of``: only
    events that happened by then (a time-travel snapshot). ``outbox``: the profiles publisher.
    ``deferred``: derived tables once, in ``finish`` (``Store``; a rebuild's first pass)."""

    def __init__(
        self,
        projection: str,
        schema: str,
        name: str,
        *,
        as_of: datetime | None = None,
        create: bool = True,
        outbox: Publisher | None = None,
        deferred: bool = False,
    ):
        if projection not in ddl.PROJECTIONS:
            raise ConfigError(f"unknown projection {projection!r}: one of {', '.join(ddl.PROJECTIONS)}")
        self.projection = projection
        self.schema = self.target = ddl.check_ident(schema)
        self.name = name
        self.as_of = as_of
        self.create = create
        self.outbox = outbox
        self.store = Store(self.schema, deferred=deferred)

    def prepare(self, conn: psycopg.Connection) -> None:
        if self.create:
            schemas_.ensure_live(conn, self.projection, self.schema)
        if self.store.deferred:
            with conn.transaction(), conn.cursor() as cur:
                self.store.prepare(cur)

    def current_build(self, conn: psycopg.Connection) -> str:
        return schemas_.build_id(conn, self.schema)

    def hold_build(self, cur: psycopg.Cursor) -> str:
        """In a batch's transaction: the swap lock, shared, until the commit (a replay's swap
        takes it exclusively), then the build it holds."""
        cur.execute("select pg_advisory_xact_lock_shared(hashtext(%s))", (schemas_.lock_key("swap", self.schema),))
        return schemas_.build_id(cur, self.schema)

    def new_batch(self) -> Batch:
        return Batch()

    def shape(self, batch: Batch, decoded, message) -> None:
        gen = resolution_gen(message.headers) if decoded.schema_fullname == CONTACT else 0
        batch.add(decoded.schema_fullname, decoded.record, message.partition, message.offset, self.as_of, gen)

    def write(self, cur, batch: Batch) -> None:
        self.store.write(cur, batch)

    def finish(self, conn: psycopg.Connection) -> None:
        """After a deferred pass: the derived tables from every row, in one transaction."""
        with conn.transaction(), conn.cursor() as cur:
            self.store.finish(cur)


def read_model_projector(
    settings: Settings,
    projection: str,
    *,
    sources: Sources = Sources(),
    schema: str | None = None,
    name: str | None = None,
    codec: Codec | None = None,
    as_of: datetime | None = None,
    batch_size: int = DEFAULT_BATCH,
    create: bool = True,
    profiles_topic: str | None = None,
    deferred: bool = False,
    batch_wait: float = 0.0,
) -> Projector:
    """A projector of ``projection`` into ``schema`` (default: its live schema), tracking its
    offsets under ``name`` (default: the schema name); with ``profiles_topic`` it publishes the
    profiles of the customers it touched there (projectors/profiles.py); ``batch_wait``: seconds a
    batch waits for more records after its first ones (``engine.runner.gather``)."""
    schema = ddl.check_ident(schema or schemas_.live_schema(settings, projection))
    name = name or schema
    codec = codec or make_codec(settings)
    outbox = Publisher(schema, name, codec, profiles_topic, keyring=make_store(settings)) if profiles_topic else None
    return Projector(
        settings,
        ReadModel(projection, schema, name, as_of=as_of, create=create, outbox=outbox, deferred=deferred),
        sources=sources,
        codec=codec,
        batch_size=batch_size,
        shape_ahead=deferred,  # a rebuild: full batches, the next shaped while one is written
        batch_wait=batch_wait,  # a live read model: a trickle of records gathered into one batch
    )
