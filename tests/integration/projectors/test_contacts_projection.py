"""The contacts projection (``/contacts``) on the one projector engine, as its own process:
SIGKILLed inside a batch's transaction and restarted, every contact is in skeleton.contacts
exactly once and the tracking rows equal the topic's end offsets; a second instance of the same
name is a standby (the writer lock), not a second consumer splitting the partitions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psycopg

from procs import contact_rows, filled_ends
from procs import stop as _stop
from procs import stored as _stored
from procs import wait as _wait
from procs import waiting_on_a_lock
from projector_events import chats, produce

RUN = textwrap.dedent("""
    import signal, sys
    from projectors.contacts import contacts_projector
    from threadline.settings import Settings
    p = contacts_projector(Settings(), name=sys.argv[1], topic=sys.argv[2], batch_size=int(sys.argv[3]))
    signal.signal(signal.SIGTERM, lambda *_: p.stop_event.set())
    p.run()
""")


def _start(services, name: str, topic: str, log_path, batch_size: int = 200) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, name, topic, str(batch_size)],
        env={**os.environ, **services.env()},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_contacts_rows_survive_a_sigkill_inside_a_batch_exactly_once_through_the_tracking_rows(
    services, settings, new_topic, catalog_topics, codec, unique, pg, tmp_path
):
    topic = new_topic(partitions=3)
    name = f"test-contacts-crash-{unique}"
    first = chats(unique, 30)
    produce(settings, codec, topic, "contact", first)
    log = tmp_path / "contacts.log"
    proc = _start(services, name, topic, log)
    try:
        at_first = filled_ends(settings, [topic])
        _wait(lambda: _stored(pg, name) == at_first, "first contacts projected", proc)
        assert sorted(contact_rows(pg, [c["event_id"] for c in first])) == sorted((c["event_id"], 1) for c in first)

        # Hold the projector's tracking rows: its next batch writes its rows, then blocks on them.
        more = chats(unique, 400, start=30)
        with psycopg.connect(settings.effective_pg_dsn) as blocker:
            blocker.execute("select * from projection_offsets where projector = %s for update", (name,))
            produce(settings, codec, topic, "contact", more)
            _wait(
                lambda: waiting_on_a_lock(pg, f"projector:{name}"),
                "projector blocked inside its batch transaction",
                proc,
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            blocker.rollback()
        assert _stored(pg, name) == at_first  # the half-written batch left nothing behind: no rows, no offsets
        assert contact_rows(pg, [c["event_id"] for c in more]) == []

        proc = _start(services, name, topic, log)
        final = filled_ends(settings, [topic])
        _wait(lambda: _stored(pg, name) == final, "restarted projector caught up", proc)
    finally:
        _stop(proc)
    every = first + more
    assert sorted(contact_rows(pg, [c["event_id"] for c in every])) == sorted((c["event_id"], 1) for c in every)
    assert sum(final.values()) == len(every)
    pg.execute("delete from projection_offsets where projector = %s", (name,))


def test_a_second_contacts_projector_of_the_same_name_waits_as_a_standby_and_takes_over(
    services, settings, new_topic, catalog_topics, codec, unique, pg, tmp_path
):
    topic = new_topic(partitions=3)
    name = f"test-contacts-standby-{unique}"
    first = chats(unique, 20)
    produce(settings, codec, topic, "contact", first)
    active = _start(services, name, topic, tmp_path / "active.log")
    standby = None
    try:
        at_first = filled_ends(settings, [topic])
        _wait(lambda: _stored(pg, name) == at_first, "first contacts projected", active)
        standby = _start(services, name, topic, tmp_path / "standby.log")
        _wait(
            lambda: waiting_on_a_lock(pg, f"projector:{name}"), "the second instance waits for the writer lock", standby
        )
        more = chats(unique, 20, start=20)
        produce(settings, codec, topic, "contact", more)
        final = filled_ends(settings, [topic])
        _wait(lambda: _stored(pg, name) == final, "the active instance projects every partition", active)
        assert standby.poll() is None  # still waiting, never consuming

        _stop(active)  # the standby takes over where the active one stopped
        latest = chats(unique, 10, start=40)
        produce(settings, codec, topic, "contact", latest)
        final = filled_ends(settings, [topic])
        _wait(lambda: _stored(pg, name) == final, "the standby took over", standby)
    finally:
        _stop(active)
        if standby is not None:
            _stop(standby)
    every = first + more + latest
    assert sorted(contact_rows(pg, [c["event_id"] for c in every])) == sorted((c["event_id"], 1) for c in every)
    pg.execute("delete from projection_offsets where projector = %s", (name,))
