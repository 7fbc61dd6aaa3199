"""Identities follow a merge and an unmerge in the read model (customer_identities, its
``customer_identity_list`` view, identity_owners), whatever order and batches the projector's Store
gets the records in, redeliveries included, on the real PostgreSQL.

The records are what the identity stage writes for Sam: a tweet, an email from an address not
seen yet, a chat carrying both (a merge), an operator's unlink (an unmerge), each at its graph
position; the contacts the merge and the unmerge re-keyed are written again under their new
customer at that position, as contacts.resolved.v1 carries them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from projector_events import contact, write_batch, write_in_random_batches

from projectors.engine.schema import create_schema
from projectors.rows import CONTACT, IDENTITY_EVENT
from streams.identity import IdentityGraph, customer_id_for

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def sams_records() -> tuple[list[tuple], str, str]:
    """(schema name, record, resolution gen) as the identity stage writes them, in graph order;
    the survivor's and the split-off customer's ids."""
    handle = {"kind": "social", "value": "sam_owner", "platform": "twitter", "primary": True}
    email = {"kind": "email", "value": "sam.owner@example.nl"}
    contacts = [
        contact("-", "tweet", "twitter", BASE, identities=[handle]),
        contact("-", "mail", "email", BASE + timedelta(minutes=10), identities=[{**email, "primary": True}]),
        contact("-", "chat", "chat", BASE + timedelta(minutes=20), identities=[{**email, "primary": True}, handle]),
    ]
    by_id = {c["event_id"]: c for c in contacts}
    g = IdentityGraph({})
    out: list[tuple] = []

    def emit(change, gen: int) -> None:
        for e in change.events:
            out.append(
                (IDENTITY_EVENT, {**e, "occurred_at": _dt(e["occurred_at"]), "recorded_at": _dt(e["recorded_at"])})
            )
        for eid, new, _old in change.rekeyed:
            out.append((CONTACT, {**by_id[eid], "customer_id": new}, gen))

    for gen, c in enumerate(contacts, start=1):
        change = g.observe({k: v for k, v in c.items() if k != "customer_id"}, gen=gen)
        emit(change, gen)
        out.append((CONTACT, {**c, "customer_id": change.customer_id}, gen))
    unlink_at = int((BASE + timedelta(minutes=30)).timestamp() * 1000)
    emit(g.unlink("email:sam.owner@example.nl", "social:twitter:sam_owner", command_id="op", at_ms=unlink_at, gen=4), 4)
    return out, customer_id_for(contacts[0]["event_id"]), customer_id_for(contacts[1]["event_id"])


def identity_lists(pg, s: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for cid, kind, platform, value in pg.execute(
        f"select customer_id, kind, platform, value from {s}.customer_identity_list order by 1, 2, 3, 4"
    ):
        out.setdefault(cid, []).append((kind, platform, value))
    return out


def table(pg, s: str, name: str, order: str) -> list[tuple]:
    return pg.execute(f"select * from {s}.{name} order by {order}").fetchall()


@pytest.mark.parametrize("seed", range(10))
def test_each_customer_lists_only_its_own_identities_whatever_the_order_and_batches(pg, unique, seed):
    rng = random.Random(seed)
    records, survivor, split_off = sams_records()
    assert any(r.get("moved_identities") for name, r, *_ in records if name == IDENTITY_EVENT)
    if seed:  # seed 0: the graph's order
        records = records + [records[rng.randrange(len(records))] for _ in range(4)]  # redeliveries
        rng.shuffle(records)
    s = f"t{unique}_own{seed}"
    in_order = f"t{unique}_ref{seed}"
    for schema in (s, in_order):
        create_schema(pg, "support", schema, "test")
    try:
        write_in_random_batches(pg, s, records, rng, 4)
        assert identity_lists(pg, s) == {
            survivor: [("social", "twitter", "sam_owner")],
            split_off: [("email", None, "sam.owner@example.nl")],
        }
        # the same tables as every record in the graph's order, one batch
        write_batch(pg, in_order, sams_records()[0])
        for name, order in (("customer_identities", "1, 2, 3, 4"), ("identity_owners", "1, 2, 3")):
            assert table(pg, s, name, order) == table(pg, in_order, name, order), name
    finally:
        for schema in (s, in_order):
            pg.execute(f"drop schema {schema} cascade")
