"""The conversation projection orders a conversation's events by their version (conversation
events v2) and takes every "latest" column from the state of the highest version; merged-away
conversations and removed messages follow. Events come from the pure core of the stream worker
(streams/conversations.py), published and projected on the real Kafka and PostgreSQL, and are
read back through the read API.

The inbox cases pick contacts whose events the old order (occurred_at, event_id) gets wrong: the
precondition is asserted, so each test fails on a projector that orders by event id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

import stitched
from fixtures.tokens import API_TOKENS, bearer, token_settings
from projector_events import contact
from projectors.api import create_app

NOW = datetime.now(UTC).replace(microsecond=0)


def customer_msg(cid: str, pid: str, at: datetime, channel: str = "email", text: str | None = None) -> dict:
    return contact(
        cid,
        pid,
        channel,
        at,
        text=text or f"customer {pid}",
        identities=[{"kind": "email", "value": f"{cid}@example.it"}],
    )


def agent_msg(cid: str, pid: str, at: datetime, channel: str = "email") -> dict:
    return contact(
        cid,
        pid,
        channel,
        at,
        text=f"agent {pid}",
        direction="outbound",
        actor={"role": "agent"},
        identities=[{"kind": "email", "value": f"{cid}@example.it"}],
    )


def old_latest(events: list[dict], column) -> object:
    """What the projector picked before versions: the value of the latest event by (occurred_at,
    event_id) among those that have one."""
    have = [e for e in events if column(e) is not None]
    return column(max(have, key=lambda e: (e["occurred_at"], e["event_id"])))


def find(make, wrong, tries: int = 400):
    """The first world ``make(i)`` whose events the old order gets wrong (``wrong(world)``)."""
    for i in range(tries):
        world = make(i)
        if wrong(world):
            return world
    raise AssertionError("no candidate where the order by event id goes wrong")


@pytest.fixture
def api(prefixed):
    def make():
        return TestClient(create_app(prefixed.model_copy(update=token_settings())), headers=bearer(API_TOKENS["admin"]))

    return make


def inbox_row(client, conversation_id: str) -> dict:
    rows = [
        r
        for r in client.get("/support/inbox", params={"limit": 500}).json()["items"]
        if r["conversation_id"] == conversation_id
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_inbox_rows_follow_the_highest_version_at_the_same_instant(prefixed, sources, codec, unique, api):
    t = NOW - timedelta(minutes=1)

    # 1. The agent answers in the same instant the customer wrote (a bot's instant reply, second
    #    precision timestamps): the agent's contact comes after the customer's, waiting on customer.
    def agent_reply(i):
        w = stitched.Worker()
        cid = f"cust-a{i}-{unique}"
        c, a = customer_msg(cid, f"{unique}-a{i}-c", t), agent_msg(cid, f"{unique}-a{i}-a", t)
        if a["event_id"] < c["event_id"]:
            return None
        w.contact(c)
        w.contact(a)
        return w

    replied = find(agent_reply, lambda w: w is not None and old_latest(w.events, lambda e: e["waiting_on"]) == "agent")
    assert replied.events[-1]["waiting_on"] == "customer"

    # 2. The customer writes again in the same instant the agent answered: waiting on agent again.
    def customer_reply(i):
        w = stitched.Worker()
        cid = f"cust-b{i}-{unique}"
        c1 = customer_msg(cid, f"{unique}-b{i}-c1", t - timedelta(minutes=5))
        a, c2 = agent_msg(cid, f"{unique}-b{i}-a", t), customer_msg(cid, f"{unique}-b{i}-c2", t)
        if c2["event_id"] < a["event_id"]:
            return None
        for x in (c1, a, c2):
            w.contact(x)
        return w

    again = find(
        customer_reply, lambda w: w is not None and old_latest(w.events, lambda e: e["waiting_on"]) == "customer"
    )
    assert again.events[-1]["waiting_on"] == "agent"

    # 3. One contact starts the first-response clock (1 h) and the resolution clock (24 h) in the
    #    same instant: the inbox shows the clock that falls due first.
    def two_clocks(i):
        w = stitched.Worker()
        w.contact(customer_msg(f"cust-c{i}-{unique}", f"{unique}-c{i}-c", t))
        return w

    clocks = find(two_clocks, lambda w: old_latest(w.events, lambda e: (e["sla"] or {}).get("kind")) == "resolution")
    assert clocks.events[-1]["open_sla"]["kind"] == "first_response"

    everything = stitched.Worker()
    for w in (replied, again, clocks):
        everything.contacts += w.contacts
        everything.events += w.events
    stitched.publish(prefixed, codec, sources, everything)
    stitched.project(prefixed, sources, codec=codec)

    with api() as client:
        row = inbox_row(client, replied.events[-1]["conversation_id"])
        assert row["waiting_on"] == "customer"
        row = inbox_row(client, again.events[-1]["conversation_id"])
        assert row["waiting_on"] == "agent"
        assert row["sla_kind"] == "next_response" and row["sla_state"] == "running"
        assert row["last_message_text"] == again.contacts[-1]["text"]
        row = inbox_row(client, clocks.events[-1]["conversation_id"])
        assert row["sla_kind"] == "first_response" and row["sla_state"] == "running"
        assert row["sla_due_at"] == (t + timedelta(hours=1)).isoformat()
        assert row["waiting_on"] == "agent" and row["messages"] == 1
        conv = client.get(f"/conversations/{clocks.events[-1]['conversation_id']}").json()
        assert [e["version"] for e in conv["events"]] == list(range(1, len(clocks.events) + 1))


def merged_world(unique: str) -> tuple[stitched.Worker, dict]:
    """Sam tweets (3 h ago); Alex, a customer id of his own, chats an hour later and nobody
    answers (the first-response clock breaches); identity then merges Alex into Sam."""
    w = stitched.Worker()
    sam, alex = f"sam-{unique}", f"alex-{unique}"
    tweet = contact(
        sam,
        f"{unique}-tweet",
        "twitter",
        NOW - timedelta(hours=3),
        text="Order arrived broken",
        identities=[{"kind": "social", "value": f"sam_{unique}", "platform": "twitter"}],
    )
    chat = contact(
        alex,
        f"{unique}-chat",
        "chat",
        NOW - timedelta(hours=2),
        text="Still waiting about my order",
        identities=[{"kind": "chat_visitor", "value": f"v-{unique}"}],
    )
    w.contact(tweet)
    w.contact(chat)
    w.advance(alex, int((NOW - timedelta(hours=1)).timestamp() * 1000))
    alex_conv = w.events[-1]["conversation_id"]
    assert w.events[-1]["event_type"] == "sla_breached"
    w.move([chat], sam, merge=True)
    return w, {
        "sam": sam,
        "alex": alex,
        "tweet": tweet,
        "chat": chat,
        "alex_conv": alex_conv,
        "sam_conv": next(e["conversation_id"] for e in w.events if e["customer_id"] == sam),
    }


def test_a_merged_away_conversation_is_not_on_the_survivors_card_nor_counted_twice(
    prefixed, sources, codec, unique, api
):
    w, x = merged_world(unique)
    ended = [e for e in w.events if e["conversation_id"] == x["alex_conv"]][-1]
    assert ended["event_type"] == "merged_into" and ended["merged_into_customer_id"] == x["sam"]
    stitched.publish(prefixed, codec, sources, w)
    stitched.project(prefixed, sources, projections=("support", "sales"), codec=codec)

    with api() as client:
        card = client.get(f"/customers/{x['alex']}").json()
        assert card["customer_id"] == x["sam"]
        shown = [c["conversation_id"] for c in card["open_conversations"] + card["prior_conversations"]]
        assert shown == [x["sam_conv"]]
        assert "merged_conversations" not in card
        full = client.get(f"/customers/{x['sam']}", params={"include_merged": "true"}).json()
        merged = {c["conversation_id"]: c for c in full["merged_conversations"]}
        assert merged[x["alex_conv"]]["state"] == "merged_into"
        assert merged[x["alex_conv"]]["merged_into_customer_id"] == x["sam"]
        assert [c["conversation_id"] for c in full["open_conversations"]] == [x["sam_conv"]]
        conv = client.get(f"/conversations/{x['sam_conv']}").json()
        assert [c["event_id"] for c in conv["contacts"]] == [x["tweet"]["event_id"], x["chat"]["event_id"]]
        assert conv["messages"] == 2 and conv["channels"] == ["chat", "twitter"] and conv["channel"] == "chat"
        inbox = [r["conversation_id"] for r in client.get("/support/inbox", params={"limit": 500}).json()["items"]]
        assert x["alex_conv"] not in inbox and inbox.count(x["sam_conv"]) == 1
        timeline = client.get(f"/customers/{x['sam']}/timeline").json()["items"]
        assert [i["conversation_id"] for i in timeline] == [x["sam_conv"], x["sam_conv"]]
        # Sam's conversation holds the one breach that happened (his tweet's clock, the chat's
        # clock running within it); Alex's ended conversation counts none.
        sales = client.get(f"/sales/customers/{x['sam']}").json()
        assert sales["breached_slas_7d"] == 1 and sales["open_conversations"] == 1


def test_an_unmerge_takes_the_message_away_and_gives_the_conversation_back(prefixed, sources, codec, unique, api):
    w, x = merged_world(unique)
    moved = next(c for c in reversed(w.contacts) if c["event_id"] == x["chat"]["event_id"])
    w.move([moved], x["alex"], merge=False)
    types = [e["event_type"] for e in w.events if e["conversation_id"] == x["sam_conv"]]
    assert "message_removed" in types
    stitched.publish(prefixed, codec, sources, w)
    stitched.project(prefixed, sources, codec=codec)

    with api() as client:
        conv = client.get(f"/conversations/{x['sam_conv']}").json()
        assert [c["event_id"] for c in conv["contacts"]] == [x["tweet"]["event_id"]]
        assert conv["messages"] == 1 and conv["channels"] == ["twitter"] and conv["channel"] == "twitter"
        assert conv["channel_switches"] == 0
        sam = client.get(f"/customers/{x['sam']}", params={"include_merged": "true"}).json()
        assert [c["conversation_id"] for c in sam["open_conversations"]] == [x["sam_conv"]]
        assert sam["merged_conversations"] == []
        alex = client.get(f"/customers/{x['alex']}").json()
        assert alex["customer_id"] == x["alex"]
        assert [c["conversation_id"] for c in alex["open_conversations"]] == [x["alex_conv"]]
        back = client.get(f"/conversations/{x['alex_conv']}").json()
        assert [c["event_id"] for c in back["contacts"]] == [x["chat"]["event_id"]] and back["messages"] == 1


def test_a_schema_made_before_versions_is_migrated_and_its_views_re_created(prefixed, sources, codec, unique, api, pg):
    from projectors import ddl
    from projectors.engine.schema import ensure_live, live_schema
    from projectors.migrate import migrations

    s = live_schema(prefixed, "support")
    ensure_live(pg, "support", s)
    # The schema as the ddl before versions made it: no version columns, no conversation_messages,
    # no ddl_version (its views go too: they are what the upgrade re-creates).
    views = [
        v for (v,) in pg.execute("select viewname from pg_views where schemaname = %s and viewname <> 'clock'", (s,))
    ]
    pg.execute("drop view " + ", ".join(f"{s}.{v}" for v in views) + " cascade")
    pg.execute(f"drop table {s}.conversation_messages")
    pg.execute(f"alter table {s}.meta drop column ddl_version")
    pg.execute(
        f"alter table {s}.conversations drop column version, drop column merged_into,"
        " drop column merged_into_customer_id"
    )
    pg.execute(
        f"alter table {s}.conversation_events drop column version, drop column status,"
        " drop column state_opened_at, drop column state_messages, drop column state_breaches,"
        " drop column sla_state, drop column open_sla_kind, drop column open_sla_due_at,"
        " drop column merged_into, drop column merged_into_customer_id"
    )
    [sql] = [sql for version, sql in migrations() if version == "0003_conversation_versions"]
    pg.execute(sql)
    assert pg.execute(f"select ddl_version from {s}.meta").fetchone() == (1,)

    w, x = merged_world(unique)
    stitched.publish(prefixed, codec, sources, w)
    stitched.project(prefixed, sources, codec=codec)  # the projector upgrades the views on start

    assert pg.execute(f"select ddl_version from {s}.meta").fetchone() == (ddl.DDL_VERSION,)
    with api() as client:
        card = client.get(f"/customers/{x['sam']}", params={"include_merged": "true"}).json()
        assert [c["conversation_id"] for c in card["open_conversations"]] == [x["sam_conv"]]
        assert [c["conversation_id"] for c in card["merged_conversations"]] == [x["alex_conv"]]


def ms(record: dict) -> int:
    return int(record["occurred_at"].timestamp() * 1000)


def test_a_clock_a_late_contact_takes_back_is_withdrawn_and_not_counted(prefixed, sources, codec, unique, api):
    """A visitor chats, an agent answers, the visitor writes again and waits past the
    next-response due time (breach published); then a message the visitor wrote between the
    answer and that one arrives late: the next-response clock starts at it now, the clock that
    started at the later message is withdrawn (sla_withdrawn), and the customer has the one
    next-response breach that happened, not two."""
    w = stitched.Worker()
    cid = f"cust-w-{unique}"
    t = NOW - timedelta(hours=3)
    w.contact(customer_msg(cid, f"{unique}-w1", t, channel="chat"))
    w.contact(agent_msg(cid, f"{unique}-wa", t + timedelta(minutes=1), channel="chat"))
    later = customer_msg(cid, f"{unique}-w3", t + timedelta(minutes=30), channel="chat")
    w.contact(later)
    w.advance(cid, int((NOW - timedelta(hours=1)).timestamp() * 1000))
    assert [e["event_type"] for e in w.events].count("sla_breached") == 1
    w.contact(customer_msg(cid, f"{unique}-w2", t + timedelta(minutes=20), channel="chat"))
    withdrawn = [e for e in w.events if e["event_type"] == "sla_withdrawn"]
    assert [(e["sla"]["kind"], e["sla"]["started_at"]) for e in withdrawn] == [("next_response", ms(later))]
    assert {e["conversation_id"] for e in w.events} == {withdrawn[0]["conversation_id"]}
    stitched.publish(prefixed, codec, sources, w)
    stitched.project(prefixed, sources, projections=("support", "sales"), codec=codec)

    with api() as client:
        conv = client.get(f"/conversations/{withdrawn[0]['conversation_id']}").json()
        assert "sla_withdrawn" in [e["event_type"] for e in conv["events"]]
        assert conv["messages"] == 4
        sales = client.get(f"/sales/customers/{cid}").json()
        assert sales["breached_slas_7d"] == 1
