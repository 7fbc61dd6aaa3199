"""The projector as its own process, SIGKILLed in the middle of a batch and restarted, ends with
exactly the rows of a clean rebuild."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import psycopg

import story as st
from compare import same_rows
from procs import filled_ends, stop, waiting_on_a_lock
from procs import stored as _stored
from procs import wait as _wait
from projector_events import contact, produce
from projectors.engine.schema import live_schema
from projectors.replay import rebuild


def _start(services, prefixed, sources, log_path):
    env = {**os.environ, **services.env(), "THREADLINE_PROJECTION_PREFIX": prefixed.projections.prefix}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "threadline.tools.cli",
            "project",
            "-p",
            "support",
            "--no-contacts",
            "--batch-size",
            "500",
            "--contacts-topic",
            sources.contacts,
            "--conversations-topic",
            sources.conversations,
            "--identities-topic",
            sources.identities,
        ],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_a_projector_killed_mid_batch_and_restarted_gives_the_rows_of_a_clean_rebuild(
    services, prefixed, sources, codec, unique, pg, tmp_path
):
    schema = live_schema(prefixed, "support")
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    log = tmp_path / "projector.log"
    proc = _start(services, prefixed, sources, log)
    try:
        first = filled_ends(prefixed, sources.topics())
        _wait(lambda: _stored(pg, schema) == first, "first events projected", proc)

        # Hold the projector's offset rows: its next batch writes its rows, then blocks on them.
        with psycopg.connect(prefixed.effective_pg_dsn) as blocker:
            blocker.execute("select * from projection_offsets where projector = %s for update", (schema,))
            more = [
                contact(cid, f"{cid}-more-{i}", "chat", s.now - timedelta(minutes=i), text=f"ancora {i}", language="it")
                for i in range(300)
                for cid in (s.giulia, s.emre)
            ]
            produce(prefixed, codec, sources.contacts, "contact", more)
            _wait(
                lambda: waiting_on_a_lock(pg, f"projector:{schema}"),
                "projector blocked inside its batch transaction",
                proc,
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            blocker.rollback()
        assert _stored(pg, schema) == first  # the half-written batch left nothing behind

        proc = _start(services, prefixed, sources, log)
        final = filled_ends(prefixed, sources.topics())
        _wait(lambda: _stored(pg, schema) == final, "restarted projector caught up", proc)
    finally:
        stop(proc)

    clean = rebuild(prefixed, "support", sources=sources, swap=False, codec=codec)
    live, rebuilt = same_rows(prefixed, schema, clean.schema, "support")
    assert len(live["contacts"]) == len(s.contacts) + len(more)
    for name in live:
        assert live[name] == rebuilt[name], name
