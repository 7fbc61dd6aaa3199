"""The kept aggregates (projectors/aggregates.py): each table is created with every schema, added to
the schemas made before it by the migration, compared by replays, and has its from-scratch query."""

from __future__ import annotations

from projectors import aggregates, ddl
from projectors.migrate import migrations


def test_every_kept_table_is_created_migrated_compared_and_computable_from_scratch():
    [migration] = [sql for version, sql in migrations() if version == "0006_aggregates"]
    schema = ddl.schema_sql("support", "x")
    for table in aggregates.TABLE_KEYS:
        assert f"create table x.{table} (" in schema
        assert f"%I.{table} (" in migration
        assert table in ddl.TABLE_KEYS
        assert "{s}" in aggregates.FROM_SCRATCH[table]


def test_the_read_views_read_the_kept_tables_not_the_rows():
    support, marketing = ddl.views_sql("support", "x"), ddl.views_sql("marketing", "x")
    assert "from x.inbox_items i" in support
    assert "from x.sla_clocks k" in support
    assert "from x.customer_stats a" in support
    assert "from x.engagement_days" in marketing
    # marketing consent: the flag kept per customer, not every contact's signals per read
    assert "from x.customer_stats where marketing_withdrawn" in marketing
    assert "where x->>'purpose' = 'marketing'" in aggregates.FROM_SCRATCH["customer_stats"]
    assert "where x->>'purpose' = 'marketing'" in aggregates.FROM_SCRATCH["engagement_members"]


def test_only_canonical_uuids_are_looked_up_as_contacts():
    assert aggregates._is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert not aggregates._is_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E")
    assert not aggregates._is_uuid("not-a-uuid")


class RecordingCursor:
    """Records every statement; COPY and queries take anything and return no rows."""

    def __init__(self, answers: dict[str, list[tuple]] | None = None):
        self.sql: list[str] = []
        self.answers = answers or {}

    def execute(self, sql, params=None):
        self.sql.append(sql)
        return iter(next((rows for part, rows in self.answers.items() if part in sql), ()))

    def copy(self, sql):
        from contextlib import contextmanager

        @contextmanager
        def writer():
            class W:
                def write_row(self, row):
                    pass

            self.sql.append(sql)
            yield W()

        return writer()


def a_batch():
    from datetime import UTC, datetime

    from projectors.rows import CONTACT, CONVERSATION_EVENT, Batch

    at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    batch = Batch()
    contact = {
        "event_id": "2f1c1a2e-0000-5000-8000-000000000001",
        "customer_id": "c-1",
        "occurred_at": at,
        "recorded_at": at,
        "connector": "meta",
        "channel": "chat",
        "direction": "inbound",
        "identities": [{"kind": "email", "value": "a@example.it", "primary": True}],
    }
    batch.add(CONTACT, contact, 0, 0)
    event = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "conversation_id": "conv-1",
        "event_type": "opened",
        "occurred_at": at,
        "recorded_at": at,
    }
    batch.add(CONVERSATION_EVENT, event, 0, 1)
    return batch


DERIVED = ("customer_stats", "engagement_", "sla_clocks", "inbox_items", ".conversations ", "conversation_messages")


def test_a_deferred_store_writes_rows_only_and_computes_what_derives_from_them_once_in_finish():
    from projectors.read_models import Store

    live, deferred = RecordingCursor(), RecordingCursor()
    Store("x").write(live, a_batch())
    Store("x", deferred=True).write(deferred, a_batch())
    assert any(d in sql for sql in live.sql for d in DERIVED)  # a live batch keeps them
    assert not [sql for sql in deferred.sql if any(d in sql for d in DERIVED)]
    assert any("x.contacts" in sql for sql in deferred.sql) and any(
        "x.conversation_events" in sql for sql in deferred.sql
    )

    store, finished = Store("x", deferred=True), RecordingCursor()
    store.finish(finished)
    assert [t for t in aggregates.TABLE_KEYS if not any(f"insert into x.{t} " in sql for sql in finished.sql)] == []
    assert not store.deferred  # the batches after it keep them


def test_a_deferred_pass_writes_without_the_lookup_indexes_and_finish_makes_them_before_the_aggregates():
    from projectors.read_models import Store

    index = "CREATE INDEX contacts_occurred_at_idx ON x.contacts USING btree (occurred_at)"
    cur = RecordingCursor({"from pg_indexes": [("contacts_occurred_at_idx", index)]})
    store = Store("x", deferred=True)
    store.prepare(cur)  # committed on its own, before the first batch's transaction
    store.prepare(cur)
    prepared = len(cur.sql)
    store.write(cur, a_batch())
    store.write(cur, a_batch())
    assert cur.sql.count("drop index x.contacts_occurred_at_idx") == 1  # once, before the first rows
    assert cur.sql.count("alter table x.contacts drop constraint contacts_pkey") == 1
    assert not [sql for sql in cur.sql[prepared:] if "drop " in sql]  # nothing a savepoint could undo
    [indexes] = [sql for sql in cur.sql if "from pg_indexes" in sql]
    assert "not x.indisunique" in indexes  # the upserts' conflict targets stay
    # contacts go straight into their table, every row as read
    assert len([sql for sql in cur.sql if sql.startswith("copy x.contacts (")]) == 2
    assert not [sql for sql in cur.sql if "insert into x.contacts" in sql or "_stage_contacts" in sql]
    finished = RecordingCursor()
    store.finish(finished)
    assert "row_number() over (partition by event_id" in finished.sql[0]  # each contact's latest resolution
    assert finished.sql[1] == "alter table x.contacts add constraint contacts_pkey primary key (event_id)"
    assert finished.sql[2] == index
    assert finished.sql.index(index) < min(i for i, sql in enumerate(finished.sql) if "customer_stats" in sql)


def test_a_refresh_reads_each_aggregate_it_made_instead_of_computing_it_again():
    cur = RecordingCursor()
    aggregates.refresh(cur, "x")
    inserts = [sql for sql in cur.sql if sql.startswith("insert")]
    assert sum("jsonb_array_elements" in sql for sql in inserts) == 1  # consent walked once, for customer_stats
    [days] = [sql for sql in inserts if sql.startswith("insert into x.engagement_days")]
    assert "from x.engagement_members" in days
    assert [sql.split()[2] for sql in inserts].index("x.customer_stats") < [sql.split()[2] for sql in inserts].index(
        "x.engagement_members"
    )


def test_a_batch_copies_each_identity_and_customer_once_with_the_span_the_upsert_would_group():
    import random
    from datetime import UTC, datetime, timedelta

    from projectors.read_models import first_seen, seen_spans

    rnd = random.Random(7)
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    identities, customers = [], []
    for _ in range(400):
        at = t0 + timedelta(minutes=rnd.randrange(1000))
        cid = f"c{rnd.randrange(20)}"
        identities.append((cid, "email", rnd.choice(["", "x"]), f"v{rnd.randrange(5)}", at, at))
        customers.append((cid, at))
    grouped: dict = {}
    for cid, kind, platform, value, first, last in identities:  # what the upsert's group by makes
        f, la = grouped.get((cid, kind, platform, value), (first, last))
        grouped[(cid, kind, platform, value)] = (min(f, first), max(la, last))
    assert sorted(seen_spans(identities)) == sorted((*k, f, la) for k, (f, la) in grouped.items())
    assert len(seen_spans(identities)) < len(identities)
    earliest: dict = {}
    for cid, at in customers:
        earliest[cid] = min(earliest.get(cid, at), at)
    assert sorted(first_seen(customers)) == sorted(earliest.items())
