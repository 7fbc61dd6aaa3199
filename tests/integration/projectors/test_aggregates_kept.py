"""The aggregates the projector keeps per batch (projectors/aggregates.py) equal their computation
from every row, whatever the batches: random worlds of contacts (some carrying marketing consent
signals, granted or withdrawn, some re-resolved to another customer later), conversations (contacts
arriving before or after the conversation events that name them), merges and unmerges,
redeliveries, written through the projector's Store in random batches on the real PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from compare import aggregates_from_scratch, assert_aggregates_match
from projector_events import contact, conversation, identity, sla, write_batch, write_in_random_batches

from projectors import aggregates
from projectors.engine.schema import create_schema
from projectors.rows import CONTACT, CONVERSATION_EVENT, IDENTITY_EVENT

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
CHANNELS = ("email", "chat", "twitter", "review", "store")


def consent_signals(rng: random.Random) -> list[dict]:
    """No signal mostly; else marketing (granted or withdrawn, on a channel or any) or another purpose."""
    if rng.random() < 0.7:
        return []
    signal = {"purpose": rng.choice(("marketing", "marketing", "analytics")), "granted": rng.random() < 0.4}
    if rng.random() < 0.3:
        signal["channel"] = rng.choice(CHANNELS)
    return [signal]


def world(rng: random.Random) -> list[tuple]:
    """(schema name, record[, resolution gen]) in log order."""
    customers = [f"c{i}" for i in range(6)]
    out: list[tuple] = []
    contacts: dict[str, list[str]] = {c: [] for c in customers}
    for i in range(40):
        cid = rng.choice(customers)
        at = BASE - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 23))
        direction = rng.choice(("inbound", "inbound", "outbound"))
        rec = contact(
            cid,
            f"p{i}",
            rng.choice(CHANNELS),
            at,
            text=f"message {i}",
            direction=direction,
            consent=consent_signals(rng),
        )
        contacts[cid].append(rec["event_id"])
        out.append((CONTACT, rec))
        if rng.random() < 0.15:  # re-resolved later to another customer (a re-keying: a higher gen)
            out.append((CONTACT, {**rec, "customer_id": rng.choice(customers)}, rng.randint(1, 9)))
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
    # merges and unmerges, in log order among the rest; in half the worlds with the identity graph's
    # positions (identities.v1 v2: a merge redelivered after its unmerge then changes nothing)
    positions = rng.random() < 0.5
    for k in range(3):
        a, b = rng.sample(customers, 2)
        at = BASE - timedelta(hours=rng.randint(0, 48))
        gen = 10 * k + 1 if positions else None
        out.insert(rng.randint(0, len(out)), (IDENTITY_EVENT, identity("merged", a, at, [b], gen=gen)))
        if rng.random() < 0.5:
            later = gen + 5 if gen else None
            out.append((IDENTITY_EVENT, identity("unmerged", a, at + timedelta(hours=1), [b], gen=later)))
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
        i = 0
        while i < len(records):
            n = rng.randint(1, 12)
            write_batch(pg, s, records[i : i + n], i)
            i += n
            if rng.random() < 0.2:  # now and then, mid-way: what is kept so far equals its rows
                assert_aggregates_match(pg, s)
        assert_aggregates_match(pg, s)
        kept, _ = aggregates_from_scratch(pg, s)
        assert kept["engagement_days"] and kept["inbox_items"] is not None and kept["sla_clocks"]
    finally:
        pg.execute(f"drop schema {s} cascade")


def test_the_random_worlds_have_withdrawn_customers_and_re_resolved_contacts():
    """The comparison above covers the consent rule, re-resolutions and merges with and without
    the graph's positions: the worlds hold each."""
    withdrawn = resolved_again = positioned = 0
    for seed in range(8):
        records = world(random.Random(seed))
        withdrawn += any(s.get("granted") is False for _, r, *_ in records for s in r.get("consent") or [])
        resolved_again += any(gen for _, _, *gen in records)
        positioned += any(r.get("gen") for name, r, *_ in records if name == IDENTITY_EVENT)
    assert withdrawn >= 4 and resolved_again >= 4 and 2 <= positioned <= 6


def write(pg, s: str, *records: tuple) -> None:
    write_batch(pg, s, records)


def engagement(pg, s: str) -> tuple[list, list, list]:
    return (
        pg.execute(f"select customer_id, channel, contacts from {s}.engagement_members order by 1, 2").fetchall(),
        pg.execute(f"select channel, contacts, customers from {s}.engagement_days order by 1").fetchall(),
        pg.execute(f"select customer_id from {s}.customer_stats where marketing_withdrawn order by 1").fetchall(),
    )


def test_a_withdrawal_empties_the_customers_engagement_in_the_batch_that_brings_it(pg, unique):
    """Emre's latest marketing signal (event time) withdraws consent: his engagement members are
    gone and the day's totals drop by his, from the batch that brought it; a later grant (in event
    time) brings them back, an older one arriving late does not."""
    s = f"t{unique}_aggc"
    create_schema(pg, "support", s, "test")
    day = BASE.replace(hour=10)
    try:
        write(
            pg,
            s,
            (CONTACT, contact("emre", "e1", "review", day, text="Great shop")),
            (CONTACT, contact("sanne", "s1", "review", day + timedelta(minutes=5), text="Fine")),
        )
        assert engagement(pg, s) == ([("emre", "review", 1), ("sanne", "review", 1)], [("review", 2, 2)], [])
        withdraw = [{"purpose": "marketing", "granted": False}]
        write(pg, s, (CONTACT, contact("emre", "e2", "email", day + timedelta(hours=1), consent=withdraw)))
        assert engagement(pg, s) == ([("sanne", "review", 1)], [("review", 1, 1)], [("emre",)])
        assert_aggregates_match(pg, s)
        older_grant = [{"purpose": "marketing", "granted": True}]
        write(pg, s, (CONTACT, contact("emre", "e0", "chat", day - timedelta(hours=1), consent=older_grant)))
        assert engagement(pg, s)[2] == [("emre",)]
        newer_grant = [{"purpose": "marketing", "granted": True}]
        write(pg, s, (CONTACT, contact("emre", "e3", "chat", day + timedelta(hours=2), consent=newer_grant)))
        members, days, withdrawn = engagement(pg, s)
        assert [m for m in members if m[0] == "emre"] == [
            ("emre", "chat", 2),
            ("emre", "email", 1),
            ("emre", "review", 1),
        ]
        assert ("review", 2, 2) in days and withdrawn == []
        assert_aggregates_match(pg, s)
    finally:
        pg.execute(f"drop schema {s} cascade")


def test_a_contact_re_resolved_to_another_customer_leaves_the_first_ones_aggregates(pg, unique):
    """A contact first resolved to one customer and later (a higher gen, another batch) to another:
    the first customer's stats and engagement lose it, not only the second's gain it."""
    s = f"t{unique}_aggm"
    create_schema(pg, "support", s, "test")
    try:
        first = contact("sam", "m1", "email", BASE, text="Photo attached")
        write(pg, s, (CONTACT, contact("sam", "m0", "twitter", BASE - timedelta(minutes=5))), (CONTACT, first))
        write(pg, s, (CONTACT, {**first, "customer_id": "sam2"}, 3))
        members, days, _ = engagement(pg, s)
        assert members == [("sam", "twitter", 1), ("sam2", "email", 1)]
        stats = pg.execute(f"select customer_id, contacts from {s}.customer_stats order by 1").fetchall()
        assert stats == [("sam", 1), ("sam2", 1)]
        assert_aggregates_match(pg, s)
    finally:
        pg.execute(f"drop schema {s} cascade")


def test_a_refresh_gives_what_the_batches_kept(pg, unique):
    """The upgrade path (a schema older than the aggregates) fills them from the rows: the same."""
    rng = random.Random(99)
    s = f"t{unique}_aggr"
    create_schema(pg, "support", s, "test")
    try:
        write_batch(pg, s, world(rng))
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
        write_batch(pg, s, world(random.Random(5)))
        kept, _ = aggregates_from_scratch(pg, s)
        # the schema as DDL version 4 made it: no aggregate tables, its views computed at read time
        views = [
            v
            for (v,) in pg.execute("select viewname from pg_views where schemaname = %s and viewname <> 'clock'", (s,))
        ]
        pg.execute("drop view " + ", ".join(f"{s}.{v}" for v in views) + " cascade")
        pg.execute("drop table " + ", ".join(f"{s}.{t}" for t in aggregates.TABLE_KEYS))
        pg.execute(f"update {s}.meta set ddl_version = 4")
        [sql] = [sql for version, sql in migrations() if version == "0006_aggregates"]
        pg.execute(sql)
        assert all(pg.execute(f"select count(*) from {s}.{t}").fetchone() == (0,) for t in aggregates.TABLE_KEYS)

        ensure_live(pg, "support", s)  # what the projector does on start

        assert pg.execute(f"select ddl_version from {s}.meta").fetchone() == (ddl.DDL_VERSION,)
        assert_aggregates_match(pg, s)
        assert aggregates_from_scratch(pg, s)[0] == kept
        assert pg.execute(f"select count(*) from {s}.inbox").fetchone()[0] == len(kept["inbox_items"])
    finally:
        pg.execute(f"drop schema {s} cascade")


ROW_TABLES = (
    "contacts",
    "customer_identities",
    "customers",
    "customer_alias",
    "identity_owners",
    "conversation_events",
    "identity_events",
    "conversations",
    "conversation_messages",
)


def _rows(pg, s: str) -> dict[str, list[str]]:
    return {t: [r for (r,) in pg.execute(f"select x::text from {s}.{t} x order by 1")] for t in ROW_TABLES}


def owned_world(rng: random.Random) -> list[tuple]:
    """``world`` and identities that owners take: contacts of several customers carry shared
    identities, and identities.v1 v2 events (linked, at graph positions read in any order) give
    each of them to one customer (``identity_owners``: the latest position wins)."""
    out = world(rng)
    customers = [f"c{i}" for i in range(6)]
    shared = [{"kind": "phone", "value": f"+3900000{k}"} for k in range(3)]
    for i in range(12):
        at = BASE - timedelta(hours=rng.randint(0, 48))
        rec = contact(rng.choice(customers), f"s{i}", rng.choice(CHANNELS), at, identities=[rng.choice(shared)])
        out.insert(rng.randint(0, len(out)), (CONTACT, rec))
    for k in range(6):
        at = BASE - timedelta(hours=k)
        linked = identity(
            "linked", rng.choice(customers), at, identities=[rng.choice(shared)], gen=100 + rng.randint(0, 50)
        )
        out.insert(rng.randint(0, len(out)), (IDENTITY_EVENT, linked))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_a_rebuilds_first_pass_and_finish_equal_the_store_batch_by_batch(pg, unique, seed):
    """A rebuild's first pass (``Store(deferred=True)``: contacts copied as read without their
    key, each contact's latest resolution kept in ``finish``, indexes and derived tables there)
    gives the rows, conversations and messages the live store's batches give, re-resolutions,
    redeliveries, merges and identities that owners take included (identities and customers
    copied as read too, each kept once in ``finish``), and aggregates equal to their computation
    from every row."""
    from projectors.rows import Batch

    from projectors.read_models import Store

    rng = random.Random(100 + seed)
    records = owned_world(rng)
    live, built = f"t{unique}_live{seed}", f"t{unique}_built{seed}"
    create_schema(pg, "support", live, "test")
    create_schema(pg, "support", built, "test")
    try:
        write_in_random_batches(pg, live, records, rng, 12)
        store = Store(built, deferred=True)
        with pg.transaction(), pg.cursor() as cur:
            store.prepare(cur)
        i = 0
        while i < len(records):
            n = rng.randint(1, 20)
            batch = Batch()
            for j, (name, rec, *gen) in enumerate(records[i : i + n]):
                batch.add(name, rec, 0, i + j, None, *gen)
            with pg.transaction(), pg.cursor() as cur:
                store.write(cur, batch)
            i += n
        with pg.transaction(), pg.cursor() as cur:
            store.finish(cur)
        assert _rows(pg, built) == _rows(pg, live)
        assert_aggregates_match(pg, built)
        assert sum(gen != () for _, _, *gen in records)  # the world re-resolved contacts
    finally:
        pg.execute(f"drop schema {live} cascade")
        pg.execute(f"drop schema {built} cascade")


def test_the_live_stores_engagement_days_equal_their_rows_in_world_101(pg, unique):
    """A batch whose changes cancel out in a day's contacts and customers but not in its inbound
    and outbound totals (an inbound contact leaves the day's members as an outbound one joins
    them) still moves those totals (the difference was dropped when contacts and customers
    summed to zero)."""
    rng = random.Random(101)
    records = world(rng)
    s = f"t{unique}_w101"
    create_schema(pg, "support", s, "test")
    try:
        write_in_random_batches(pg, s, records, rng, 12)
        assert_aggregates_match(pg, s)
    finally:
        pg.execute(f"drop schema {s} cascade")
