"""kafka-python against the real broker: the calls Threadline depends on."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from threadline.kafka import make_producer


def _consume(settings, topic, group, want, timeout=30.0):
    consumer = KafkaConsumer(
        topic, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", **settings.kafka.client_config()
    )
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    return consumer, got


def test_produce_with_acks_all_then_consume_in_a_group_and_resume_from_committed_offsets(settings, new_topic, unique):
    topic = new_topic(partitions=3)
    producer = make_producer(settings)
    metas = [producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode()).get(timeout=30) for i in range(30)]
    producer.close()
    assert all(m.offset >= 0 for m in metas)

    group = f"g-{unique}"
    consumer, first = _consume(settings, topic, group, 30)
    assert sorted(r.value for r in first) == sorted(f"v{i}".encode() for i in range(30))
    consumer.commit()
    committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    consumer.close()
    assert sum(committed.values()) == 30

    producer = make_producer(settings)
    for i in range(30, 40):
        producer.send(topic, key=b"k", value=f"v{i}".encode())
    producer.close()
    consumer, second = _consume(settings, topic, group, 10)
    consumer.close()
    # Resumed after the committed offsets: only the ten new records, none of the first thirty.
    assert sorted(r.value for r in second) == sorted(f"v{i}".encode() for i in range(30, 40))


def test_same_key_lands_on_one_partition_in_order(settings, new_topic):
    topic = new_topic(partitions=6)
    producer = make_producer(settings)
    metas = [producer.send(topic, key=b"customer-1", value=str(i).encode()).get(timeout=30) for i in range(20)]
    producer.close()
    assert len({m.partition for m in metas}) == 1
    assert [m.offset for m in metas] == sorted(m.offset for m in metas)


def test_list_offsets_reports_beginning_and_end(settings, new_topic):
    # kafka-python against Kafka 4.x once failed on ListOffsets v0: check the calls we use.
    topic = new_topic(partitions=2)
    producer = make_producer(settings)
    for i in range(7):
        producer.send(topic, key=b"a", value=b"x")
    producer.close()
    consumer = KafkaConsumer(**settings.kafka.client_config())
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    end = consumer.end_offsets(tps)
    begin = consumer.beginning_offsets(tps)
    consumer.close()
    assert sum(end.values()) == 7
    assert set(begin.values()) == {0}


def test_admin_creates_and_describes_topics_with_their_configs(admin, new_topic):
    from kafka.admin import ConfigResource

    topic = new_topic(partitions=4, cleanup_policy="compact", retention_ms="-1")
    described = {t["name"]: t for t in admin.describe_topics([topic])}
    assert len(described[topic]["partitions"]) == 4
    configs = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")["topic"][topic]
    assert configs["cleanup.policy"]["value"] == "compact"
    assert configs["retention.ms"]["value"] == "-1"
    assert admin.describe_cluster()["brokers"]
