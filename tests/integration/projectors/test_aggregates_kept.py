"""The aggregates the projector keeps per batch (projectors/aggregates.py) equal their computation
from every row, whatever the batches: random worlds of contacts, conversations (contacts arriving
before or after the conversation events that name them), merges and unmerges, redeliveries, written
through the projector's Store in random batches on the real PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from compare import aggregates_from_scratch, assert_aggregates_match
from projector_events import contact, conversation, identity, sla

from projectors import aggregates
from projectors.engine.schema import create_schema
from projectors.read_models import Store
from projectors.rows import CONTACT, CONVERSATION_EVENT, IDENTITY_EVENT, Batch

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
CHANNELS = ("email", "chat", "twitter", "review", "store")


def world(rng: random.Random) -> list[tuple[str, dict]]:
    customers = [f"c{i}" for i in range(6)]
    out: list[tuple[str, dict]] = []
    contacts: dict[str, list[str]] = {c: [] for c in customers}
    for i in range(40):
        cid = rng.choice(customers)
        at = BASE - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 23))
        direction = rng.choice(("inbound", "inbound", "outbound"))
        rec = contact(cid, f"p{i}", rng.choice(CHANNELS), at, text=f"message {i}", direction=direction)
        contacts[cid].append(rec["event_id"])
        out.append((CONTACT, rec))
    for k in range(8):
        cid = rng.choice(customers)
        conv = f"k{k}"
        at = BASE - timedelta(days=rng.randint(0, 10))
        version = 0
        mine = contacts[cid] or [None]
        for step in ("opened", "message_appended", "sla_started", rng.choice(("sla_hit", "sla_breached", None))):
            if step is None:
                continue
            version += 1
            at += timedelta(minutes=rng.randint(1, 90))
            extra = {"version": version, "status": "open", "channel": rng.choice(CHANNELS), "messages": version}
            if step in ("opened", "message_appended"):
                extra["contact_event_id"] = rng.choice(mine)
                extra["waiting_on"] = "agent"
            if step.startswith("sla"):
                extra["sla"] = sla("first_response", at - timedelta(minutes=30), rng.choice((600, 3600, 86400 * 30)))
            out.append((CONVERSATION_EVENT, conversation(cid, conv, step, at, **extra)))
        if rng.random() < 0.5:
            version += 1
            out.append(
                (
                    CONVERSATION_EVENT,
                    conversation(cid, conv, "resolved", at + timedelta(hours=1), version=version, status="resolved"),
                )
            )
    rng.shuffle(out)
    # merges and unmerges, in log order among the rest
    for _ in range(3):
        a, b = rng.sample(customers, 2)
        at = BASE - timedelta(hours=rng.randint(0, 48))
        out.insert(rng.randint(0, len(out)), (IDENTITY_EVENT, identity("merged", a, at, [b])))
        if rng.random() < 0.5:
            out.append((IDENTITY_EVENT, identity("unmerged", a, at + timedelta(hours=1), [b])))
    # redeliveries: at-least-once
    out += [out[rng.randrange(len(out))] for _ in range(5)]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_kept_aggregates_equal_the_computation_from_every_row_whatever_the_batches(pg, unique, seed):
    rng = random.Random(seed)
    s = f"t{unique}_agg{seed}"
    create_schema(pg, "support", s, "test")
    try:
        records = world(rng)
        store = Store(s)
        i = 0
        while i < len(records):
            n = rng.randint(1, 12)
            batch = Batch()
            for j, (name, rec) in enumerate(records[i : i + n]):
                batch.add(name, rec, 0, i + j)
            with pg.transaction(), pg.cursor() as cur:
                store.write(cur, batch)
            i += n
            if rng.random() < 0.2:  # now and then, mid-way: what is kept so far equals its rows
                assert_aggregates_match(pg, s)
        assert_aggregates_match(pg, s)
        kept, _ = aggregates_from_scratch(pg, s)
        assert kept["engagement_days"] and kept["inbox_items"] is not None and kept["sla_clocks"]
    finally:
        pg.execute(f"drop schema {s} cascade")


def test_a_refresh_gives_what_the_batches_kept(pg, unique):
    """The upgrade path (a schema older than the aggregates) fills them from the rows: the same."""
    rng = random.Random(99)
    s = f"t{unique}_aggr"
    create_schema(pg, "support", s, "test")
    try:
        batch = Batch()
        for j, (name, rec) in enumerate(world(rng)):
            batch.add(name, rec, 0, j)
        with pg.transaction(), pg.cursor() as cur:
            Store(s).write(cur, batch)
        before, _ = aggregates_from_scratch(pg, s)
        with pg.transaction():
            aggregates.refresh(pg, s)
        after, _ = aggregates_from_scratch(pg, s)
        assert before == after
    finally:
        pg.execute(f"drop schema {s} cascade")


def test_a_schema_made_before_the_aggregates_is_migrated_and_filled_when_the_projector_starts(pg, unique):
    from projectors import ddl
    from projectors.engine.schema import ensure_live
    from projectors.migrate import migrations

    s = f"t{unique}_aggu"
    create_schema(pg, "support", s, "test")
    try:
        batch = Batch()
        for j, (name, rec) in enumerate(world(random.Random(5))):
            batch.add(name, rec, 0, j)
        with pg.transaction(), pg.cursor() as cur:
            Store(s).write(cur, batch)
        kept, _ = aggregates_from_scratch(pg, s)
        # the schema as DDL version 3 made it: no aggregate tables, its views computed at read time
        views = [
            v
            for (v,) in pg.execute("select viewname from pg_views where schemaname = %s and viewname <> 'clock'", (s,))
        ]
        pg.execute("drop view " + ", ".join(f"{s}.{v}" for v in views) + " cascade")
        pg.execute("drop table " + ", ".join(f"{s}.{t}" for t in aggregates.TABLE_KEYS))
        pg.execute(f"update {s}.meta set ddl_version = 3")
        [sql] = [sql for version, sql in migrations() if version == "0005_aggregates"]
        pg.execute(sql)
        assert all(pg.execute(f"select count(*) from {s}.{t}").fetchone() == (0,) for t in aggregates.TABLE_KEYS)

        ensure_live(pg, "support", s)  # what the projector does on start

        assert pg.execute(f"select ddl_version from {s}.meta").fetchone() == (ddl.DDL_VERSION,)
        assert_aggregates_match(pg, s)
        assert aggregates_from_scratch(pg, s)[0] == kept
        assert pg.execute(f"select count(*) from {s}.inbox").fetchone()[0] == len(kept["inbox_items"])
    finally:
        pg.execute(f"drop schema {s} cascade")
