"""A stream worker through a Kafka outage, on a private broker of its own (the shared one keeps
serving the other tests): the broker paused with SIGSTOP for longer than a produce request may wait
while the worker is processing a burst of contacts.

What must hold: the worker keeps running (no stage stops, the process does not exit) and, once the
broker is back, every contact is resolved and stitched without a restart; the identity graph's
changelog replays to what a clean run of the graph topic gives (nothing lost, nothing doubled).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from streams.app import StreamTopics
from streams.identity_runner import identity_group
from streams.identity_stage import GraphTable
from streams.route_runner import route_group
from tests.integration.connectors.test_gateway_outage import private_kafka  # noqa: F401 (a fixture)
from tests.integration.streams.stream_helpers import Producer, Reader, create_topics, person, start_worker
from tests.integration.streams.stream_helpers import wait_for_members
from tests.integration.streams.test_identity_runner import clean_run, recovered

PAUSE_SECONDS = 45  # longer than aiokafka's request timeout (40 s): produce requests time out
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def test_a_worker_goes_on_after_the_broker_was_paused_and_loses_no_contact(private_kafka, services, tmp_path):  # noqa: F811
    from threadline.topics import admin_client

    broker, s = private_kafka
    run = uuid.uuid4().hex[:8]
    topics = StreamTopics.prefixed(f"out{run}")
    admin = admin_client(s)
    create_topics(admin, topics)
    app_id = f"outage-{run}"
    worker = start_worker(
        services,
        app_id=app_id,
        prefix=f"out{run}",
        home=tmp_path / "home",
        log_path=tmp_path / "worker.log",
        THREADLINE_KAFKA_BOOTSTRAP=s.to_env()["THREADLINE_KAFKA_BOOTSTRAP"],
    )
    producer = Producer(s)
    resolved = Reader(s, topics.resolved)
    conversations = Reader(s, topics.conversations)
    try:
        for group in (app_id, route_group(app_id), identity_group(app_id)):
            wait_for_members(admin, group, 1)
        before = [c for i in range(5) for c in person(i, run, BASE)]
        producer.contacts(topics.contacts, before)
        resolved.wait_for(lambda vs: len({v["event_id"] for v in vs}) >= len(before), what="before the outage")

        burst = [c for i in range(5, 405) for c in person(i, run, BASE)]
        records = producer.contacts(topics.contacts, burst)  # acknowledged: the worker is on it
        pid = broker.managed().pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_SECONDS)
            assert worker.proc.poll() is None, "the worker exited during the outage"
        finally:
            os.kill(pid, signal.SIGCONT)

        want = len(before) + len(burst)
        got = resolved.wait_for(
            lambda vs: len({v["event_id"] for v in vs}) >= want, timeout=240, what="every contact resolved"
        )
        assert {r["event_id"] for r in records} <= {v["event_id"] for v in got}
        stitched = conversations.wait_for(
            lambda vs: {r["event_id"] for r in records} <= {v["contact_event_id"] for v in vs},
            timeout=120,
            what="every contact stitched",
        )
        assert stitched
        assert worker.proc.poll() is None, "the worker exited after the outage"
        world = SimpleNamespace(topics=topics, services=SimpleNamespace(settings=s), run=run)
        graph, _contacts = clean_run(world)
        assert recovered(s, GraphTable(topics.graph_changelog)) == graph
        lines = worker.log_lines()
        print(
            "\nduring the outage:",
            sorted({line["event"] for line in lines if line.get("level") in ("warning", "error")}),
        )
    finally:
        resolved.close()
        conversations.close()
        producer.close()
        worker.stop()
        admin.close()
