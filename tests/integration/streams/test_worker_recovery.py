"""The stream worker on the real broker when things go wrong: an undecodable record goes to the
DLQ and the partition moves on; a worker killed with SIGKILL and restarted rebuilds its tables
from the changelogs (memory store: nothing else could give them back) and produces neither lost
nor doubled conversation state; redelivered contacts change nothing; SIGTERM stops it in time."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from streams.conversations import Stitcher
from streams.identity import IdentityGraph
from tests.integration.streams.stream_helpers import Reader, make_contact, settle, stream_run

SHUTDOWN_LIMIT = 30  # seconds: the bound for a SIGTERM shutdown


@pytest.fixture
def setup(services, tmp_path):
    with stream_run(services, "rec", tmp_path) as world:
        yield world.run, world.topics, world.producer, lambda n: world.worker()


def test_an_undecodable_record_goes_to_the_dlq_with_its_reason_and_the_partition_moves_on(setup, services):
    run, topics, producer, worker = setup
    worker(1)
    contact = make_contact(f"sms-{run}", "sms", [{"kind": "phone", "value": "+48601234567", "primary": True}])
    bad = producer.raw(topics.contacts, key=b"phone:+48601234567", value=b"\x00\x7f\xff\xff\xffgarbage")
    [good] = producer.contacts(topics.contacts, [contact])
    assert producer.partitions[good["event_id"]] == bad.partition
    Reader(services.settings, topics.resolved).wait_for(
        lambda vs: any(v["event_id"] == good["event_id"] for v in vs), what="the contact behind the bad record"
    )
    dlq = Reader(services.settings, topics.dlq, decode=False)
    dlq.wait_for(lambda vs: len(vs) >= 1, what="the DLQ record")
    [(msg, value)] = dlq.records
    headers = {k: v.decode() for k, v in msg.headers}
    assert value == b"\x00\x7f\xff\xff\xffgarbage"
    assert headers["source_topic"] == topics.contacts
    assert (headers["source_partition"], headers["source_offset"]) == (str(bad.partition), str(bad.offset))
    assert headers["reason"].startswith("DecodeError")


def test_a_worker_killed_and_restarted_loses_nothing_and_doubles_nothing(setup, services):
    run, topics, producer, worker = setup
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    email = [{"kind": "email", "value": f"kasia.{run}@example.pl", "primary": True}]
    agent = {"role": "agent", "department": "support"}
    before_kill = [
        make_contact(
            f"m1-{run}",
            "email",
            email,
            base=t0,
            text="Kiedy dostanę zwrot?",
            facts=[{"kind": "order_number", "value": f"7{run}"}],
        ),
        make_contact(f"r1-{run}", "email", email, base=t0, minutes=5, direction="outbound", actor=agent),
        make_contact(f"m2-{run}", "email", email, base=t0, minutes=8, text="Dziękuję, a kiedy?"),
    ]
    after_kill = [
        before_kill[2],  # redelivered: the same provider message again
        make_contact(f"m3-{run}", "email", email, base=t0, minutes=12, text="Halo?"),
    ]

    w1 = worker(1)
    records = producer.contacts(topics.contacts, before_kill)
    conversations = Reader(services.settings, topics.conversations)
    conversations.wait_for(
        lambda vs: any(
            v["contact_event_id"] == records[2]["event_id"] and v["event_type"] == "message_appended" for v in vs
        ),
        what="m2 stitched",
    )
    os.killpg(w1.proc.pid, signal.SIGKILL)
    w1.proc.wait(timeout=10)

    records += producer.contacts(topics.contacts, after_kill)
    w2 = worker(2)
    events = conversations.wait_for(
        lambda vs: any(
            v["contact_event_id"] == records[-1]["event_id"] and v["event_type"] == "message_appended" for v in vs
        ),
        what="m3 stitched after the restart",
    )
    events = settle(conversations)

    # What the rules give for these contacts, computed here without Kafka.
    graph, stitcher, state, want = IdentityGraph({}), Stitcher(), None, []
    for r in records:
        change = graph.observe(r)
        if not change.duplicate:
            state, out = stitcher.apply(state, {**r, "customer_id": change.customer_id})
            want += out
    assert {e["event_id"] for e in events} == {e["event_id"] for e in want}
    assert sum(1 for e in {e["event_id"]: e for e in events}.values() if e["event_type"] == "opened") == 1
    appended = {e["contact_event_id"]: e for e in events if e["event_type"] == "message_appended"}
    # The restarted worker continued the conversation and knew the order number from before the kill.
    assert appended[records[-1]["event_id"]]["conversation_id"] == appended[records[0]["event_id"]]["conversation_id"]
    assert {"kind": "order_number", "value": f"7{run}", "source": None} in appended[records[-1]["event_id"]]["facts"]
    conversations.close()

    w2.proc.send_signal(signal.SIGTERM)
    try:
        w2.proc.wait(timeout=SHUTDOWN_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within {SHUTDOWN_LIMIT} s of SIGTERM")
