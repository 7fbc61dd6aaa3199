"""A merge and an operator's unmerge through the stream worker (its own process, real broker) and
the support projector, read back through the read API: each customer ends with one conversation
holding its own contacts, none left over from before the unmerge, no duplicate open ones.

Sam tweets; an email arrives from an address not seen yet (a second customer); a chat carries
both the address and the handle, so identity merges them: one conversation of three contacts.
The operator then unlinks the address from the handle: the email and the chat (both carry the
address) move to the split-off customer, and the conversations follow. So do the contact rows
(the support timeline, skeleton.contacts): a contact is listed under the customer of its latest
resolution (the identity graph's position, header ``gen``), whatever customer it was first
resolved to and whatever order the projector reads the partitions in. And so do the identities:
after the unmerge the survivor's card, its rows in customer_identities and its profile on
customer-profiles.v1 list the handle only, the split-off customer's the address only (the chat
carries both, but the identity graph gives each to one customer: the unmerge event names the
address as moved, at its graph position).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from fixtures.tokens import API_TOKENS, bearer, token_settings
from projectors.api import create_app
from projectors.contacts import contacts_projector
from projectors.engine.runner import DEFAULT_BATCH, Sources
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets
from schemas.codec import make_codec
from threadline.catalog import CUSTOMER_PROFILES
from streams.identity import customer_id_for
from tests.integration.streams.stream_helpers import REPO, Reader, make_contact, settle, stream_run
from fixtures.projections import drop_projections
from tests.integration.projectors.compare import assert_aggregates_match

BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)


def project(services, world, prefix: str, batch_size: int = DEFAULT_BATCH, profiles: bool = False):
    """The support projection under ``prefix``; with ``profiles`` it publishes customer-profiles.v1
    as the live one does."""
    settings = services.settings.model_copy(update={"projection_prefix": prefix, **token_settings()})
    sources = Sources(
        contacts=world.topics.resolved, conversations=world.topics.conversations, identities=world.topics.identities
    )
    topic = CUSTOMER_PROFILES.name if profiles else None
    read_model_projector(settings, "support", sources=sources, batch_size=batch_size, profiles_topic=topic).run(
        stop_at=end_offsets(settings, sources.topics())
    )
    contacts_projector(settings, name=f"{prefix}contacts", topic=world.topics.resolved).run(
        stop_at=end_offsets(settings, [world.topics.resolved])
    )
    return settings


def latest_profiles(services, customer_ids: list[str]) -> dict[str, dict | None]:
    """The last record of each of ``customer_ids`` on customer-profiles.v1 (None: a tombstone)."""
    reader = Reader(services.settings, CUSTOMER_PROFILES.name, decode=False)
    codec = make_codec(services.settings)
    try:
        ends = reader.consumer.end_offsets(list(reader.consumer.assignment()))
        while any(reader.consumer.position(tp) < end for tp, end in ends.items()):
            reader.poll()
    finally:
        reader.consumer.close()
    out: dict[str, dict | None] = {}
    for m, raw in reader.records:
        key = (m.key or b"").decode()
        if key in customer_ids:
            out[key] = codec.decode(raw).record if raw is not None else None
    return out


def identity_list(services, schema: str, customer_ids: list[str]) -> dict[str, list[tuple]]:
    """The customer_identities read model (its ``customer_identity_list`` view): each customer's
    identities as (kind, platform, value)."""
    out: dict[str, list[tuple]] = {c: [] for c in customer_ids}
    with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
        for cid, kind, platform, value in conn.execute(
            f"select customer_id, kind, platform, value from {schema}.customer_identity_list"
            " where customer_id = any(%s) order by 1, 2, 3, 4",
            (customer_ids,),
        ):
            out[cid].append((kind, platform, value))
    return out


def skeleton_customers(services, event_ids: list[str]) -> dict[str, str]:
    """skeleton.contacts (one table for every run): each contact's customer, now."""
    with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select event_id::text, customer_id from skeleton.contacts where event_id = any(%s::uuid[])", (event_ids,)
        )
        return dict(rows.fetchall())


@pytest.fixture(scope="module")
def story(services, catalog_topics, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    handle = {"kind": "social", "value": f"sam_{tag}", "platform": "twitter"}
    email = {"kind": "email", "value": f"sam.{tag}@example.nl"}
    contacts = [
        make_contact(f"{tag}-tweet", "twitter", [{**handle, "primary": True}], base=BASE, text="Broken"),
        make_contact(
            f"{tag}-email", "email", [{**email, "primary": True}], minutes=10, base=BASE, text="Photo attached"
        ),
        make_contact(
            f"{tag}-chat",
            "chat",
            [{**email, "primary": True}, handle],
            minutes=20,
            base=BASE,
            text="I wrote on twitter and by email",
        ),
    ]
    prefixes = []
    with stream_run(services, "mu", tmp_path_factory.mktemp("merge-unmerge")) as world:
        world.worker()
        resolved, conversations, identities = (world.reader(n) for n in ("resolved", "conversations", "identities"))
        records = []
        for c in contacts:
            records += world.producer.contacts(world.topics.contacts, [c])
            resolved.wait_for(
                lambda vs, eid=records[-1]["event_id"]: eid in {v["event_id"] for v in vs}, what="resolved"
            )
        tweet, mail, chat = (r["event_id"] for r in records)
        survivor, split_off = customer_id_for(tweet), customer_id_for(mail)
        identities.wait_for(
            lambda vs: any(v["event_type"] == "merged" and v["customer_id"] == survivor for v in vs), what="merged"
        )
        settle(conversations, quiet=8.0)
        prefixes.append(f"mu{world.run}m_")
        merged = project(services, world, prefixes[-1])
        merged_rows = skeleton_customers(services, [r["event_id"] for r in records])
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "threadline.tools.cli",
                "identity",
                "unlink",
                f"email:{email['value']}",
                f"social:twitter:{handle['value']}",
                "--topic-prefix",
                world.prefix,
            ],
            env={**os.environ, **services.env()},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        identities.wait_for(lambda vs: any(v["event_type"] == "unmerged" for v in vs), what="unmerged")
        conversations.wait_for(lambda vs: any(v["event_type"] == "message_removed" for v in vs), what="message_removed")
        settle(conversations, quiet=8.0)
        prefixes.append(f"mu{world.run}u_")
        unmerged = project(services, world, prefixes[-1], profiles=True)
        unmerged_rows = skeleton_customers(services, [r["event_id"] for r in records])
        profiles = latest_profiles(services, [survivor, split_off])
        identity_rows = {"unmerged": identity_list(services, f"{prefixes[-1]}support", [survivor, split_off])}
        prefixes.append(f"mu{world.run}o_")
        one_by_one = project(services, world, prefixes[-1], batch_size=1)  # merge and unmerge in batches of their own
        identity_rows["one_by_one"] = identity_list(services, f"{prefixes[-1]}support", [survivor, split_off])
        for r in (resolved, conversations, identities):
            r.close()
    yield {
        "merged": merged,
        "unmerged": unmerged,
        "one_by_one": one_by_one,
        "tweet": tweet,
        "mail": mail,
        "chat": chat,
        "survivor": survivor,
        "split_off": split_off,
        "merged_rows": merged_rows,
        "unmerged_rows": unmerged_rows,
        "handle": handle,
        "email": email,
        "profiles": profiles,
        "identity_rows": identity_rows,
    }
    with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
        for prefix in prefixes:
            drop_projections(conn, prefix)
            conn.execute("delete from projection_offsets where projector = %s", (f"{prefix}contacts",))
        conn.execute("delete from skeleton.contacts where event_id = any(%s::uuid[])", ([tweet, mail, chat],))


def conversations_of(api, customer_id: str) -> list[dict]:
    card = api.get(f"/customers/{customer_id}").json()
    return card["open_conversations"] + card["prior_conversations"]


def test_after_the_merge_one_conversation_holds_the_three_contacts(story):
    s = story
    with TestClient(create_app(s["merged"]), headers=bearer(API_TOKENS["admin"])) as api:
        assert api.get(f"/customers/{s['split_off']}").json()["customer_id"] == s["survivor"]
        [conv] = conversations_of(api, s["survivor"])
        contacts = api.get(f"/conversations/{conv['conversation_id']}").json()["contacts"]
        assert [c["event_id"] for c in contacts] == [s["tweet"], s["mail"], s["chat"]]
        inbox = [r["customer_id"] for r in api.get("/support/inbox", params={"limit": 500}).json()["items"]]
        assert inbox.count(s["survivor"]) == 1


def test_after_the_unmerge_each_customer_has_one_conversation_with_its_own_contacts(story):
    s = story
    with TestClient(create_app(s["unmerged"]), headers=bearer(API_TOKENS["admin"])) as api:
        [mine] = conversations_of(api, s["survivor"])
        conv = api.get(f"/conversations/{mine['conversation_id']}").json()
        assert [c["event_id"] for c in conv["contacts"]] == [s["tweet"]] and conv["messages"] == 1
        assert conv["channels"] == ["twitter"]
        assert api.get(f"/customers/{s['split_off']}").json()["customer_id"] == s["split_off"]
        [theirs] = conversations_of(api, s["split_off"])
        conv = api.get(f"/conversations/{theirs['conversation_id']}").json()
        assert [c["event_id"] for c in conv["contacts"]] == [s["mail"], s["chat"]] and conv["messages"] == 2
        inbox = [r["customer_id"] for r in api.get("/support/inbox", params={"limit": 500}).json()["items"]]
        assert inbox.count(s["survivor"]) == 1 and inbox.count(s["split_off"]) == 1


def timeline_of(api, customer_id: str) -> list[str]:
    body = api.get(f"/customers/{customer_id}/timeline", params={"limit": 500}).json()
    assert body["customer_id"] == customer_id, body
    return [c["event_id"] for c in body["items"]]


def test_after_the_merge_the_survivor_lists_the_three_contacts(story):
    s = story
    with TestClient(create_app(s["merged"]), headers=bearer(API_TOKENS["admin"])) as api:
        assert timeline_of(api, s["survivor"]) == [s["tweet"], s["mail"], s["chat"]]
    survivor = s["survivor"]
    assert s["merged_rows"] == {s["tweet"]: survivor, s["mail"]: survivor, s["chat"]: survivor}


def test_after_the_unmerge_each_customer_lists_only_its_own_contacts(story):
    """The chat was first resolved to the survivor (the merge happened on it): its row follows it
    to the split-off customer, so the survivor's timeline does not count it any more."""
    s = story
    with TestClient(create_app(s["unmerged"]), headers=bearer(API_TOKENS["admin"])) as api:
        assert timeline_of(api, s["survivor"]) == [s["tweet"]]
        assert timeline_of(api, s["split_off"]) == [s["mail"], s["chat"]]
    split_off = s["split_off"]
    assert s["unmerged_rows"] == {s["tweet"]: s["survivor"], s["mail"]: split_off, s["chat"]: split_off}


def test_the_kept_aggregates_are_what_the_rows_give_after_merges_and_unmerges_in_any_batches(story):
    """Inbox rows, SLA clocks and engagement per day are kept per batch: after the merge, after the
    unmerge, and with every record a batch of its own, they equal the computation from every row."""
    with psycopg.connect(story["merged"].effective_pg_dsn) as conn:
        for name in ("merged", "unmerged", "one_by_one"):
            assert_aggregates_match(conn, f"{story[name].projections.prefix}support")


def identities_on_card(api, customer_id: str) -> list[tuple]:
    card = api.get(f"/customers/{customer_id}").json()
    assert card["customer_id"] == customer_id, card
    return sorted((i["kind"], i["platform"], i["value"]) for i in card["identities"])


def test_after_the_merge_the_survivor_holds_both_identities(story):
    s = story
    handle, email = ("social", "twitter", s["handle"]["value"]), ("email", None, s["email"]["value"])
    with TestClient(create_app(s["merged"]), headers=bearer(API_TOKENS["admin"])) as api:
        assert identities_on_card(api, s["survivor"]) == sorted([handle, email])


def test_after_the_unmerge_each_card_lists_only_its_own_identities(story):
    """The chat carries the address and the handle and now belongs to the split-off customer, yet
    the handle is the survivor's (the graph gave it to the tweet's customer and the unlink keeps
    the two apart); the address moved back to the split-off customer at the unmerge."""
    s = story
    handle, email = ("social", "twitter", s["handle"]["value"]), ("email", None, s["email"]["value"])
    with TestClient(create_app(s["unmerged"]), headers=bearer(API_TOKENS["admin"])) as api:
        assert identities_on_card(api, s["survivor"]) == [handle]
        assert identities_on_card(api, s["split_off"]) == [email]
    for name in ("unmerged", "one_by_one"):  # the read model, whatever the batches
        assert s["identity_rows"][name] == {s["survivor"]: [handle], s["split_off"]: [email]}, name


def test_after_the_unmerge_each_profile_lists_only_its_own_identities(story):
    s = story
    profiles = s["profiles"]
    assert profiles.keys() == {s["survivor"], s["split_off"]}
    listed = {
        cid: sorted((i["kind"], i["platform"], i["value"]) for i in p["identities"]) for cid, p in profiles.items()
    }
    assert listed == {
        s["survivor"]: [("social", "twitter", s["handle"]["value"])],
        s["split_off"]: [("email", None, s["email"]["value"])],
    }
