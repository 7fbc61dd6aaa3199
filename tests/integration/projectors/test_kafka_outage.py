"""A projector through a Kafka outage, on a private broker of its own (the shared one keeps serving
the other tests): the broker paused with SIGSTOP for longer than a fetch request may wait, while
the projector reads its topic through ``BatchConsumer`` (aiokafka on a thread of its own).

What must hold: the projector keeps running (its thread does not end) and, once the broker is
back, it projects what comes next without a restart, every contact exactly once, its tracking rows
at the topic's end offsets."""

from __future__ import annotations

import os
import signal
import threading
import time

from procs import contact_rows, filled_ends, stored, wait
from projector_events import chats, produce
from projectors.contacts import contacts_projector
from tests.integration.connectors.test_gateway_outage import private_kafka  # noqa: F401 (a fixture)

PAUSE_SECONDS = 45  # longer than aiokafka's request timeout (40 s): its fetch requests time out


def test_a_projector_goes_on_after_the_broker_was_paused_and_projects_every_contact_once(
    private_kafka,  # noqa: F811
    codec,
    unique,
    pg,
):
    from threadline.topics import admin_client

    broker, s = private_kafka
    topic = f"test.outage.{unique}.resolved"
    admin = admin_client(s)
    admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
    admin.close()
    name = f"test-outage-{unique}"
    projector = contacts_projector(s, name=name, topic=topic, batch_size=50)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            projector.run()
        except BaseException as exc:  # the test fails on it below
            failures.append(exc)

    thread = threading.Thread(target=run, name="outage-projector", daemon=True)
    first = chats(unique, 20)
    produce(s, codec, topic, "contact", first)
    thread.start()
    try:
        at_first = filled_ends(s, [topic])
        wait(lambda: stored(pg, name) == at_first, "first contacts projected")

        pid = broker.managed().pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_SECONDS)
            assert thread.is_alive() and not failures, f"the projector stopped during the outage: {failures}"
        finally:
            os.kill(pid, signal.SIGCONT)

        more = chats(unique, 30, start=20)
        produce(s, codec, topic, "contact", more)
        final = filled_ends(s, [topic])
        wait(lambda: stored(pg, name) == final, "the contacts after the outage projected", timeout=180)
        assert thread.is_alive() and not failures, f"the projector stopped after the outage: {failures}"
    finally:
        projector.stop_event.set()
        thread.join(60)
    every = [c["event_id"] for c in first + more]
    assert sorted(contact_rows(pg, every)) == sorted((e, 1) for e in every)
    assert sum(final.values()) == len(every)
    assert not thread.is_alive()
    pg.execute("delete from projection_offsets where projector = %s", (name,))
