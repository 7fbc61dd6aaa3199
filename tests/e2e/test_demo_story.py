"""The demo story of design.md through the stream worker on the real broker.

Giulia orders online with her email and phone; days later she tweets that the order arrived
broken, DMs the order number, emails a photo and calls two hours later: one customer, one
conversation across four contacts and three channels, the SLA clock started at the tweet. Sanne
fills a web form for ski insurance, then chats "I already filled in that form": the chat is the
same conversation and carries the form's facts. Kasia's SMS waits unanswered: the timer breaches
its clock without another contact arriving.

The worker runs as its own process on topics of its own, with the RocksDB store. Contacts are
written to contacts.v1 as the gateway writes them, one after the other as they happen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.streams.stream_helpers import make_contact, stream_run

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def story(services, tmp_path_factory):
    with stream_run(services, "demo", tmp_path_factory.mktemp("demo-story")) as world:
        resolved, conversations = world.reader("resolved"), world.reader("conversations")
        world.worker(
            THREADLINE_STREAMS_STORE="rocksdb", THREADLINE_SLA_TARGETS="sms=3", THREADLINE_SLA_TIMER_GRACE_SECONDS="1"
        )
        try:
            yield world.run, world.topics, world.producer, resolved, conversations
        finally:
            resolved.close()
            conversations.close()


def send_in_turn(topics, producer, resolved, contacts):
    """Each contact once the one before it is resolved: they arrive as they happen."""
    out = []
    for c in contacts:
        [record] = producer.contacts(topics.contacts, [c])
        resolved.wait_for(
            lambda vs, eid=record["event_id"]: any(v["event_id"] == eid for v in vs),
            what=f"resolved {c.channel} contact",
        )
        out.append(record)
    return out


def final_customer(resolved, event_ids):
    """The customer of each contact as of its latest resolution (merges re-key earlier ones)."""
    latest = {}
    for v in resolved.values():
        latest[v["event_id"]] = v["customer_id"]
    return {latest[e] for e in event_ids}


def test_giulias_tweet_dm_email_and_call_are_one_customer_and_one_conversation_clocked_from_the_tweet(story):
    run, topics, producer, resolved, conversations = story
    email, phone = f"giulia.{run}@example.it", f"+39347{int(run, 16) % 10**7:07d}"
    handle, order = [{"kind": "social", "value": f"giulia_{run}", "platform": "twitter", "primary": True}], f"1{run}"
    t_tweet = NOW - timedelta(hours=3)
    contacts = [
        make_contact(
            f"order-{run}",
            "store",
            [{"kind": "email", "value": email, "primary": True}, {"kind": "phone", "value": phone}],
            base=NOW - timedelta(days=3),
            facts=[{"kind": "order_number", "value": order}],
            language="it",
            text="Ordine online",
        ),
        make_contact(
            f"tw-{run}", "twitter", handle, base=t_tweet, language="it", text="@shop il mio ordine è arrivato rotto!"
        ),
        make_contact(
            f"dm-{run}",
            "twitter",
            handle,
            base=t_tweet,
            minutes=6,
            language="it",
            text=f"Numero d'ordine: {order}",
            facts=[{"kind": "order_number", "value": order}],
        ),
        make_contact(
            f"mail-{run}",
            "email",
            [{"kind": "email", "value": email, "primary": True}],
            base=t_tweet,
            minutes=15,
            language="it",
            text="Vi mando la foto del pacco.",
            attachments=[{"name": "pacco.jpg", "content_type": "image/jpeg", "size_bytes": 482113}],
        ),
        make_contact(
            f"call-{run}",
            "voice",
            [{"kind": "phone", "value": phone, "primary": True}],
            base=t_tweet,
            minutes=135,
            language="it",
            thread={"call_id": f"CA-{run}"},
        ),
    ]
    order_rec, *story_recs = send_in_turn(topics, producer, resolved, contacts)
    ids = [r["event_id"] for r in story_recs]

    [customer] = final_customer(resolved, [order_rec["event_id"], *ids])
    events = conversations.wait_for(
        lambda vs: (
            {
                v["contact_event_id"]
                for v in vs
                if v["customer_id"] == customer and v["event_type"] == "message_appended"
            }
            >= set(ids)
        ),
        what="Giulia's four contacts",
    )
    mine = [v for v in events if v["customer_id"] == customer]
    appended = {v["contact_event_id"]: v for v in mine if v["event_type"] == "message_appended"}
    [conversation] = {appended[e]["conversation_id"] for e in ids}
    assert [appended[e]["channel"] for e in ids] == ["twitter", "twitter", "email", "voice"]
    switches = [
        (v["previous_channel"], v["channel"])
        for v in mine
        if v["event_type"] == "channel_switched" and v["conversation_id"] == conversation
    ]
    assert switches == [("twitter", "email"), ("email", "voice")]
    [clock] = [
        v["sla"]
        for v in mine
        if v["event_type"] == "sla_started"
        and v["conversation_id"] == conversation
        and v["sla"]["kind"] == "first_response"
    ]
    assert clock["started_at"] == t_tweet and clock["target_seconds"] == 900
    # The agent on the phone sees the order number she gave on Twitter.
    assert {"kind": "order_number", "value": order, "source": None} in appended[ids[-1]]["facts"]
    # The order placed days earlier is her history, not part of this conversation.
    assert appended[order_rec["event_id"]]["conversation_id"] != conversation


def test_sannes_chat_continues_her_web_form_conversation_and_carries_the_forms_facts(story):
    run, topics, producer, resolved, conversations = story
    email = f"sanne.{run}@example.nl"
    form, chat = send_in_turn(
        topics,
        producer,
        resolved,
        [
            make_contact(
                f"form-{run}",
                "web_form",
                [
                    {"kind": "email", "value": email, "primary": True},
                    {"kind": "phone", "value": f"+31612{int(run, 16) % 10**6:06d}"},
                ],
                base=NOW - timedelta(minutes=30),
                language="nl",
                text="Ik wil een skiverzekering voor februari.",
                facts=[
                    {"kind": "travel_month", "value": "2027-02", "source": "form.month"},
                    {"kind": "insurance", "value": "ski", "source": "form.product"},
                ],
            ),
            make_contact(
                f"chat-{run}-1",
                "chat",
                [{"kind": "chat_visitor", "value": f"v-{run}", "primary": True}, {"kind": "email", "value": email}],
                base=NOW - timedelta(minutes=20),
                language="nl",
                text="Ik heb dat formulier al ingevuld",
                thread={"session_id": f"chat-{run}"},
            ),
        ],
    )
    [customer] = final_customer(resolved, [form["event_id"], chat["event_id"]])
    events = conversations.wait_for(
        lambda vs: any(v["contact_event_id"] == chat["event_id"] and v["event_type"] == "message_appended" for v in vs),
        what="Sanne's chat",
    )
    appended = {
        v["contact_event_id"]: v
        for v in events
        if v["event_type"] == "message_appended" and v["customer_id"] == customer
    }
    assert appended[form["event_id"]]["conversation_id"] == appended[chat["event_id"]]["conversation_id"]
    facts = {(f["kind"], f["value"]) for f in appended[chat["event_id"]]["facts"]}
    assert {("travel_month", "2027-02"), ("insurance", "ski"), ("language", "nl")} <= facts


def test_an_unanswered_sms_is_breached_by_the_timer_without_another_contact(story):
    run, topics, producer, resolved, conversations = story
    [sms] = send_in_turn(
        topics,
        producer,
        resolved,
        [
            make_contact(
                f"sms-{run}",
                "sms",
                [{"kind": "phone", "value": f"+48601{int(run, 16) % 10**6:06d}", "primary": True}],
                base=datetime.now(UTC),
                language="pl",
                text="Kiedy dostanę zwrot pieniędzy?",
            )
        ],
    )
    [customer] = final_customer(resolved, [sms["event_id"]])
    events = conversations.wait_for(
        lambda vs: any(v["event_type"] == "sla_breached" and v["customer_id"] == customer for v in vs),
        what="the SMS's breach",
    )
    [started] = [
        v
        for v in events
        if v["event_type"] == "sla_started"
        and v["contact_event_id"] == sms["event_id"]
        and v["sla"]["kind"] == "first_response"
    ]
    [breach] = [v for v in events if v["event_type"] == "sla_breached" and v["customer_id"] == customer]
    assert started["sla"]["target_seconds"] == 3
    assert breach["sla"]["kind"] == "first_response" and breach["occurred_at"] == started["sla"]["due_at"]
    assert breach["contact_event_id"] is None  # it came from the timer, not from a contact
