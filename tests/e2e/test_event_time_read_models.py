"""Invariant 7 through the read models (issue 13, "what must be shown"): the same contacts sent in
event-time order, in reverse, and as history imported after live traffic give, after the stream
worker (its own process, real broker) and the support projector (real PostgreSQL), identical
conversation tables, messages and support inbox rows (row by row), the same folded
conversations.v1, and through the read API one conversation where one belongs.

The cast: Giulia tweets, DMs her order number, emails (her email carries the order number and her
phone, so identity merges the twitter customer into hers), an agent answers, she calls. A chat
visitor writes three messages, a fourth with an earlier time (in reverse order it arrives last:
the late chat message), and the agent answers. An SMS nobody answers (its clock breaches on the
worker's watermark). A call and its transcription, joined by the CallSid.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "projectors"))

from fixtures.tokens import API_TOKENS, bearer, token_settings  # noqa: E402
from projectors.api import create_app  # noqa: E402
from projectors.engine.runner import Sources  # noqa: E402
from projectors.read_models import read_model_projector  # noqa: E402
from projectors.replay import end_offsets  # noqa: E402
from streams.conversations import fold  # noqa: E402
from tests.integration.streams.stream_helpers import make_contact, settle, stream_run  # noqa: E402
from fixtures.projections import drop_projections

BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
CONV_COLUMNS = (
    "conversation_id, origin_customer_id, opened_at, last_event_at, state, channel, first_channel,"
    " channels, channel_switches, waiting_on, last_sla_event, sla_kind, sla_due_at, sla_breaches,"
    " messages, last_contact_event_id, last_message_at, merged_into, merged_into_customer_id"
)


def cast(tag: str) -> list:
    handle = [{"kind": "social", "value": f"giulia_{tag}", "platform": "twitter", "primary": True}]
    email = {"kind": "email", "value": f"giulia.{tag}@example.it", "primary": True}
    phone = {"kind": "phone", "value": f"+39347{int(tag, 16) % 10**7:07d}"}
    order = [{"kind": "order_number", "value": f"o-{tag}"}]
    visitor = [{"kind": "chat_visitor", "value": f"v-{tag}", "primary": True}]
    sms = [{"kind": "phone", "value": f"+31612{int(tag, 16) % 10**6:06d}", "primary": True}]
    caller = [{"kind": "phone", "value": f"+48601{int(tag, 16) % 10**6:06d}", "primary": True}]
    agent = {"direction": "outbound", "actor": {"role": "agent"}}
    c = make_contact
    return [
        c(f"{tag}-tweet", "twitter", handle, minutes=0, base=BASE, text="Il mio ordine è arrivato rotto!"),
        c(f"{tag}-dm", "twitter", handle, minutes=5, base=BASE, text="Numero ordine", facts=order),
        c(f"{tag}-email", "email", [email, phone], minutes=40, base=BASE, text="Ecco la foto", facts=order),
        c(f"{tag}-reply", "email", [email], minutes=50, base=BASE, text="Ci scusiamo", **agent),
        c(f"{tag}-call", "voice", [{**phone, "primary": True}], minutes=120, base=BASE, text="Chiamo per l'ordine"),
        c(f"{tag}-sms", "sms", sms, minutes=100, base=BASE, text="Hello? Anyone?"),
        c(f"{tag}-chat1", "chat", visitor, minutes=200, base=BASE, text="Hi"),
        c(f"{tag}-chat2", "chat", visitor, minutes=201, base=BASE, text="My parcel"),
        c(f"{tag}-chat3", "chat", visitor, minutes=202, base=BASE, text="Is late"),
        c(f"{tag}-chat0", "chat", visitor, minutes=199, base=BASE, text="Hello"),  # sent before, arrives late
        c(f"{tag}-chat4", "chat", visitor, minutes=204, base=BASE, text="Checking", **agent),
        c(f"{tag}-callsid", "voice", caller, minutes=300, base=BASE, text="(call)", thread={"call_id": f"CA{tag}"}),
        c(
            f"{tag}-transcript",
            "voice",
            caller,
            minutes=330,
            base=BASE,
            text="Transcript: where is my order",
            thread={"call_id": f"CA{tag}"},
        ),
    ]


def orders(contacts: list) -> dict[str, list]:
    by_time = sorted(contacts, key=lambda x: x.occurred_at)
    half = len(by_time) // 2
    return {"in_order": by_time, "reversed": by_time[::-1], "history_after_live": by_time[half:] + by_time[:half]}


@pytest.fixture(scope="module")
def worlds(services, catalog_topics, tmp_path_factory):
    """Each arrival order through its own worker and topics, projected into its own schemas."""
    tag = datetime.now(UTC).strftime("%H%M%S") + "ab"
    out = {}
    prefixes = []
    for name, contacts in orders(cast(tag)).items():
        with stream_run(services, f"et{name[:2]}", tmp_path_factory.mktemp(name)) as world:
            world.worker()
            resolved, conversations = world.reader("resolved"), world.reader("conversations")
            records = []
            for c in contacts:  # one by one, as they arrive
                records += world.producer.contacts(world.topics.contacts, [c])
            ids = {r["event_id"] for r in records}
            resolved.wait_for(lambda vs: ids <= {v["event_id"] for v in vs}, what="every contact resolved")
            # idle: the watermark follows the wall clock, every clock due and every window past
            events = settle(conversations, quiet=12.0, timeout=120.0)
            resolved.close()
            conversations.close()
            prefix = f"et{name[:2]}{world.run}_"
            prefixes.append(prefix)
            settings = services.settings.model_copy(update={"projection_prefix": prefix, **token_settings()})
            sources = Sources(
                contacts=world.topics.resolved,
                conversations=world.topics.conversations,
                identities=world.topics.identities,
            )
            targets = end_offsets(settings, sources.topics())
            read_model_projector(settings, "support", sources=sources).run(stop_at=targets)
            out[name] = {
                "settings": settings,
                "schema": f"{prefix}support",
                "events": events,
                "records": records,
                "tag": tag,
            }
    yield out
    with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
        for prefix in prefixes:
            drop_projections(conn, prefix)


def tables(conn, schema: str) -> dict[str, list]:
    return {
        "conversations": conn.execute(
            f"select {CONV_COLUMNS} from {schema}.conversations where state <> 'merged_into' order by conversation_id"
        ).fetchall(),
        "conversation_messages": conn.execute(
            f"select conversation_id, contact_event_id, occurred_at, channel"
            f" from {schema}.conversation_messages order by 1, 2"
        ).fetchall(),
        "inbox": conn.execute(f"select * from {schema}.inbox order by conversation_id").fetchall(),
        "conversation_state": conn.execute(
            f"select customer_id, conversation_id, state, sla_state"
            f" from {schema}.conversation_state where state <> 'merged_into'"
            " order by conversation_id"
        ).fetchall(),
    }


def test_every_arrival_order_gives_the_same_conversations_messages_and_inbox_rows(worlds, services):
    with psycopg.connect(services.settings.effective_pg_dsn) as conn:  # one transaction: one now()
        seen = {name: tables(conn, w["schema"]) for name, w in worlds.items()}
    reference = seen["in_order"]
    assert len(reference["conversations"]) == 4 and len(reference["inbox"]) == 3
    for name, got in seen.items():
        for table, rows in reference.items():
            assert got[table] == rows, (name, table)


def test_every_arrival_order_folds_to_the_same_conversation_events(worlds):
    folded = {name: fold(w["events"]) for name, w in worlds.items()}
    assert len(folded["in_order"]) == 4
    assert folded["reversed"] == folded["in_order"]
    assert folded["history_after_live"] == folded["in_order"]


@pytest.mark.parametrize("order", ["in_order", "reversed", "history_after_live"])
def test_the_read_api_shows_one_conversation_where_one_belongs(worlds, order):
    w = worlds[order]
    tag = w["tag"]
    with TestClient(create_app(w["settings"]), headers=bearer(API_TOKENS["admin"])) as api:
        inbox = api.get("/support/inbox", params={"limit": 500}).json()["items"]
        customers = [row["customer_id"] for row in inbox]
        assert len(customers) == len(set(customers)), "a customer with two open conversations"

        giulia = api.get(
            "/customers/by-identity", params={"kind": "social", "value": f"giulia_{tag}", "platform": "twitter"}
        ).json()
        convs = giulia["open_conversations"] + giulia["prior_conversations"]
        assert len(convs) == 1 and convs[0]["state"] == "open", convs
        conv = api.get(f"/conversations/{convs[0]['conversation_id']}").json()
        assert [c["channel"] for c in conv["contacts"]] == ["twitter", "twitter", "email", "email", "voice"]
        assert conv["waiting_on"] == "agent" and conv["sla_breaches"] >= 1
        timeline = api.get(f"/customers/{giulia['customer_id']}/timeline").json()["items"]
        assert {i["conversation_id"] for i in timeline} == {conv["conversation_id"]} and len(timeline) == 5

        # the late chat message: one conversation of five messages, not two
        visitor = api.get("/customers/by-identity", params={"kind": "chat_visitor", "value": f"v-{tag}"}).json()
        convs = visitor["open_conversations"] + visitor["prior_conversations"]
        assert len(convs) == 1, convs
        chat = api.get(f"/conversations/{convs[0]['conversation_id']}").json()
        assert [c["event_id"] for c in chat["contacts"]] == [
            r["event_id"]
            for r in sorted((r for r in w["records"] if r["channel"] == "chat"), key=lambda r: r["occurred_at"])
        ]
        assert chat["messages"] == 5
        timeline = api.get(f"/customers/{visitor['customer_id']}/timeline").json()["items"]
        assert len(timeline) == 5 and {i["conversation_id"] for i in timeline} == {chat["conversation_id"]}

        # the call and its transcription, joined by the CallSid
        caller = [row for row in inbox if row["channel"] == "voice" and row["customer_id"] != giulia["customer_id"]]
        assert len(caller) == 1 and caller[0]["messages"] == 2

        # the unanswered SMS: breached once
        sms = [row for row in inbox if row["channel"] == "sms"]
        assert len(sms) == 1 and sms[0]["sla_state"] == "breached" and sms[0]["waiting_on"] == "agent"
