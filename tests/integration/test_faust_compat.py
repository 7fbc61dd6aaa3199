"""aiokafka through faust on the real broker: an agent with a table, and changelog recovery.

The worker runs as a subprocess (faust workers can hang on shutdown: SIGTERM, then SIGKILL).
Its table lives in memory, so the count after a restart can only come from the changelog.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaConsumer

from threadline.kafka import make_producer
from threadline.process import terminate_tree

HERE = Path(__file__).parent


def _start_worker(services, env_extra, log_path):
    env = {**os.environ, **services.env(), **env_extra}
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, str(HERE / "faust_counter.py"), "worker", "-l", "warn"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=HERE,
        start_new_session=True,
    )


def _send(settings, topic, key, n):
    producer = make_producer(settings)
    for _ in range(n):
        producer.send(topic, key=key, value=b"hit")
    producer.flush(30)
    producer.close()


def _wait_for_count(consumer, key, want, timeout=90.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(int(r.value) for r in records if r.key == key)
        if want in seen:
            return seen
    raise AssertionError(f"count {want} for {key!r} never appeared; saw {seen}")


def test_faust_table_recovers_its_state_from_the_changelog_after_a_worker_restart(
    services, new_topic, unique, tmp_path
):
    settings = services.settings
    app_id = f"compat-{unique}"
    source = new_topic(partitions=3)
    output = new_topic(partitions=1)
    # Changelog created by us with the source's partition count (faust raises PartitionsMismatch otherwise).
    new_topic(partitions=3, name=f"{app_id}-counts-changelog", cleanup_policy="compact")
    env = {
        "COUNTER_APP_ID": app_id,
        "COUNTER_SOURCE": source,
        "COUNTER_OUTPUT": output,
        "COUNTER_DATADIR": str(tmp_path / "faust"),
    }
    consumer = KafkaConsumer(output, auto_offset_reset="earliest", **settings.kafka.client_config())

    worker = _start_worker(services, env, tmp_path / "worker1.log")
    try:
        _send(settings, source, b"giulia", 5)
        _wait_for_count(consumer, b"giulia", 5)
    finally:
        terminate_tree(worker.pid, timeout=20)
    assert worker.wait(timeout=10) is not None

    worker = _start_worker(services, env, tmp_path / "worker2.log")
    try:
        # The first worker may have died without leaving its group: wait until the group has
        # settled on the new worker alone, so no rebalance lands in the middle of the count.
        from tests.integration.streams.stream_helpers import wait_for_members
        from threadline.topics import admin_client

        admin = admin_client(settings)
        try:
            wait_for_members(admin, app_id, 1)
        finally:
            admin.close()
        _send(settings, source, b"giulia", 3)
        # 8, not 3: the restarted worker rebuilt the table from the changelog before counting on.
        seen = _wait_for_count(consumer, b"giulia", 8)
    finally:
        terminate_tree(worker.pid, timeout=20)
        consumer.close()
    # Counts after the restart continue from 5 (6, 7, 8): none restarted from an empty table.
    assert min(seen) >= 6, f"the table restarted from zero: {seen}"
