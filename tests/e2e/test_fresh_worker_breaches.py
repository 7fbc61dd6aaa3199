"""A fresh worker (a replay from offset 0, a restart) places the contacts of the past in their own
event time, on the real broker: a partition it was just given is not idle before
THREADLINE_STREAMS_IDLE_SECONDS passed, so its watermark does not jump to the wall clock before the
first records reach it.

The worker is running and its clock timer has looked at its partitions (a probe contact of another
customer, on another partition of contacts.resolved.v1, went through) when a chat of an hour ago
and the agent's answer 30 s after it arrive. The answer came in time (chat: 2 min), so the first
response clock is hit, and nothing else: no `sla_breached`, which a worker that took the fresh
partition as idle emitted on the chat's arrival (every clock of the past breached behind a
wall-clock watermark) and a live run of the same contacts never emits.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from kafka.partitioner.default import murmur2

from connectors.contact import to_record
from streams.identity import customer_id_for
from tests.integration.streams.stream_helpers import make_contact, settle, stream_run
from threadline import catalog

IDLE = {"THREADLINE_STREAMS_IDLE_SECONDS": "60"}  # far more than this test needs before its contacts arrive


def resolved_partition(contact) -> int:
    """The partition of contacts.resolved.v1 of a contact that is its customer's first."""
    cid = customer_id_for(to_record(contact, datetime.now(UTC))["event_id"]).encode()
    return (murmur2(cid) & 0x7FFFFFFF) % catalog.EVENT_PARTITIONS


def test_contacts_of_the_past_reaching_a_fresh_worker_give_no_breach_a_live_run_would_not(services, tmp_path):
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).replace(microsecond=0)
    visitor = [{"kind": "chat_visitor", "value": f"v-{tag}", "primary": True}]
    chat = make_contact(f"{tag}-chat", "chat", visitor, base=now - timedelta(hours=1), text="Where is my parcel?")
    answer = make_contact(
        f"{tag}-answer",
        "chat",
        visitor,
        base=now - timedelta(hours=1),
        minutes=0.5,
        text="It leaves today",
        direction="outbound",
        actor={"role": "agent"},
    )
    probe = next(
        p
        for i in range(100)
        for p in [
            make_contact(f"{tag}-probe{i}", "sms", [{"kind": "phone", "value": f"+3161{i:07d}", "primary": True}])
        ]
        if resolved_partition(p) != resolved_partition(chat)
    )
    with stream_run(services, "fresh", tmp_path) as world:
        world.worker(**IDLE)
        conversations = world.reader("conversations")
        [p] = world.producer.contacts(world.topics.contacts, [probe])
        prober = customer_id_for(p["event_id"])
        conversations.wait_for(lambda vs: any(v["customer_id"] == prober for v in vs), what="the probe")
        time.sleep(2.0)  # the clock timer (every second) looks at the partitions, the chat's one still empty
        records = world.producer.contacts(world.topics.contacts, [chat, answer])
        customer = customer_id_for(records[0]["event_id"])
        conversations.wait_for(
            lambda vs: any(v["customer_id"] == customer and v["event_type"] == "sla_hit" for v in vs),
            what="the first response clock hit",
        )
        events = [v for v in settle(conversations, quiet=5.0) if v["customer_id"] == customer]
        conversations.close()
    clocks = [(e["event_type"], e["sla"]["kind"]) for e in events if e["event_type"].startswith("sla_")]
    assert ("sla_hit", "first_response") in clocks
    assert [c for c in clocks if c[0] == "sla_breached"] == [], clocks
