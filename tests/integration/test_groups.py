"""Consumer group lag on the real broker: `threadline groups` and `threadline status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from threadline.groups import group_lags
from threadline.kafka import make_producer


def _produce(settings, topic: str, n: int, partitions: int) -> None:
    producer = make_producer(settings)
    try:
        for i in range(n):
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % partitions).get(timeout=30)
    finally:
        producer.close()


def test_lag_of_a_group_that_consumed_part_of_a_topic_is_the_records_left(services, settings, new_topic, unique):
    topic = new_topic(partitions=2)
    _produce(settings, topic, 12, partitions=2)  # 6 records in each partition
    group = f"test.{unique}.readers"
    consumer = KafkaConsumer(
        topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **settings.kafka.client_config()
    )
    try:
        read = []
        while len(read) < 12:
            read += [r for rs in consumer.poll(timeout_ms=2000).values() for r in rs]
        # committed: 4 of partition 0 and 1 of partition 1 processed, the rest still to do
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1),
                TopicPartition(topic, 1): OffsetAndMetadata(1, "", -1),
            }
        )

        [live] = group_lags(settings, groups=[group])
        assert live.state == "Stable" and live.members == 1
        assert live.lag == 12 - 5
        assert [(t.topic, t.partitions, t.committed, t.end, t.lag) for t in live.topics] == [(topic, 2, 5, 12, 7)]
    finally:
        consumer.close()

    env = {**os.environ, **services.env()}
    result = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "groups", "--json", "-g", group],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [g] = json.loads(result.stdout)
    assert (g["state"], g["members"], g["lag"]) == ("Empty", 0, 7)

    table = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "groups", "-g", group],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if group in line)
    assert [c.strip() for c in row.strip("│ ").split("│")][-4:] == ["2", "5", "12", "7"]


def test_status_shows_a_line_per_consumer_group_beside_the_projections(services, settings, new_topic, unique):
    topic = new_topic(partitions=1)
    _produce(settings, topic, 3, partitions=1)
    group = f"test.{unique}.status"
    from threadline.topics import admin_client

    admin = admin_client(settings)
    try:
        admin.alter_group_offsets(group, {TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})
    finally:
        admin.close()
    from threadline.tools import stack

    parts = {p.name: p for p in stack.status(settings)}
    assert parts[f"group {group}"].detail == "lag 2, Empty, 0 members, 1 topic"
    assert parts[f"group {group}"].address == "kafka" and parts[f"group {group}"].answers
    assert any(name.startswith("projection ") for name in parts)  # the projectors' lag lines stay
    names = list(parts)
    assert names.index("kafka") < names.index(f"group {group}")

    env = {**os.environ, **services.env()}
    result = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"group {group}"[:20] in result.stdout and "lag 2," in result.stdout
