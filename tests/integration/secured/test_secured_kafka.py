"""Threadline's operations commands and clients against a real secured broker (conftest.py):
SASL_SSL with SCRAM-SHA-512 / SCRAM-SHA-256, and SSL with a client certificate (mTLS)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from tests.integration.secured.conftest import PASSWORD_256, USER_256, clean_environ
from threadline.batch_consumer import BatchConsumer
from threadline.catalog import CATALOG
from threadline.groups import group_lags
from threadline.kafka import aiokafka_config, make_producer
from threadline.topics import admin_client, describe


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", *args],
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def text(result: subprocess.CompletedProcess) -> str:
    """stdout and stderr with rich's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def unwrapped(result: subprocess.CompletedProcess) -> str:
    """stdout and stderr without any white space between words (rich breaks long paths too)."""
    return text(result).replace(" ", "")


@pytest.fixture
def prefix() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def secured_admin(secured_kafka):
    admin = admin_client(secured_kafka.settings())
    yield admin
    admin.close()


def test_topics_apply_creates_the_catalog_over_sasl_ssl_and_a_second_run_is_in_line(
    secured_kafka, secured_admin, prefix
):
    first = cli(secured_kafka.sasl_env(), "topics", "apply", "--prefix", prefix)
    assert first.returncode == 0, first.stderr
    names = [f"{prefix}.{t.name}" for t in CATALOG]
    for name in names:
        assert f"created {name}" in text(first)
    assert (
        f"created {prefix}.contacts.v1 partitions=6 replication=1 cleanup.policy=delete retention.bytes=-1 retention.ms=-1"
        in text(first)
    )
    found = describe(secured_admin, names)
    assert set(found) == set(names)
    assert found[f"{prefix}.contacts.v1"][0] == 6
    assert found[f"{prefix}.customer-profiles.v1"][2]["cleanup.policy"] == "compact"

    second = cli(secured_kafka.sasl_env(), "topics", "apply", "--prefix", prefix)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert sorted(line.split()[-1] for line in second.stdout.splitlines() if line.startswith("in line")) == sorted(
        names
    )


def test_dry_run_on_a_fresh_prefix_prints_the_plan_and_creates_nothing(secured_kafka, secured_admin, prefix):
    result = cli(secured_kafka.sasl_env(), "topics", "apply", "--dry-run", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    out = text(result)
    assert (
        f"would create {prefix}.ingest.dlq.v1 partitions=1 replication=1 cleanup.policy=delete retention.ms=2592000000"
        in out
    )
    assert (
        f"would create {prefix}.streams.conversations.changelog.v1 partitions=6 replication=1 cleanup.policy=compact"
        in out
    )
    assert f"plan: {len(CATALOG)} to create, 0 in line, 0 drifts; nothing changed" in out
    assert not [t for t in secured_admin.list_topics() if t.startswith(prefix)]


def test_dry_run_reports_drift_and_exits_3_without_changing_anything(secured_kafka, secured_admin, prefix):
    contacts = f"{prefix}.contacts.v1"
    secured_admin.create_topics(
        {contacts: {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}}
    )
    result = cli(secured_kafka.sasl_env(), "topics", "apply", "--dry-run", "--prefix", prefix)
    assert result.returncode == 3, result.stdout + result.stderr
    out = text(result)
    assert f"drift: {contacts}: 2 partitions, catalog says 6" in out
    assert f"drift: {contacts}: retention.ms=86400000, catalog says -1" in out
    assert f"would create {prefix}.identities.v1 partitions=6" in out
    assert f"plan: {len(CATALOG) - 1} to create, 0 in line, 2 drifts; nothing changed" in out
    assert [t for t in secured_admin.list_topics() if t.startswith(prefix)] == [contacts]
    assert describe(secured_admin, [contacts])[contacts][0] == 2


def test_a_wrong_password_is_a_clear_error_without_traceback(secured_kafka):
    result = cli(
        secured_kafka.sasl_env(THREADLINE_KAFKA_SASL_PASSWORD="not-the-password"), "topics", "apply", "--dry-run"
    )
    assert result.returncode == 2
    out = text(result)
    # kafka-python logs the broker's answer (invalid credentials) or, when the broker closed the
    # connection instead, only the disconnect: both name the credentials as the cause.
    assert f"error: Kafka at {secured_kafka.sasl_bootstrap} " in out and "rejected the credentials" in out
    assert "SASL SCRAM-SHA-512 as 'threadline'" in out and "THREADLINE_KAFKA_SASL_PASSWORD" in out
    assert "Traceback" not in out and "not-the-password" not in out
    assert result.stderr.count("\n") <= 4  # the one error, not kafka-python's retry log


def test_without_the_ca_the_broker_certificate_is_not_trusted(secured_kafka):
    result = cli(secured_kafka.sasl_env(THREADLINE_KAFKA_SSL_CAFILE=None), "topics", "apply", "--dry-run")
    assert result.returncode == 2
    out = text(result)
    assert (
        f"error: TLS verification of Kafka at {secured_kafka.sasl_bootstrap} failed (self-signed certificate in certificate chain)"
        in out
    )
    assert "no THREADLINE_KAFKA_SSL_CAFILE is set" in out
    assert "Traceback" not in out


def test_a_ca_that_did_not_sign_the_broker_certificate_is_named(secured_kafka):
    other = str(secured_kafka.pki.other_ca)
    result = cli(secured_kafka.sasl_env(THREADLINE_KAFKA_SSL_CAFILE=other), "topics", "list")
    assert result.returncode == 0  # the catalog is printed without asking the cluster
    result = cli(secured_kafka.sasl_env(THREADLINE_KAFKA_SSL_CAFILE=other), "topics", "apply", "--dry-run")
    assert result.returncode == 2
    assert f"THREADLINE_KAFKA_SSL_CAFILE={other}isnottheCAthatsignedit" in unwrapped(result)


def test_settings_that_contradict_each_other_fail_before_connecting(secured_kafka):
    result = cli(
        secured_kafka.sasl_env(THREADLINE_KAFKA_SASL_USERNAME=None), "topics", "apply", "--dry-run", timeout=30
    )
    assert result.returncode == 2
    assert "kafka_sasl_mechanism=SCRAM-SHA-512 needs kafka_sasl_username" in text(result)


def test_mtls_client_certificate_is_accepted_and_its_absence_refused(secured_kafka, prefix):
    ok = cli(secured_kafka.mtls_env(), "topics", "apply", "--prefix", prefix)
    assert ok.returncode == 0, ok.stderr
    assert f"created {prefix}.contacts.v1" in text(ok)
    refused = cli(
        secured_kafka.mtls_env(THREADLINE_KAFKA_SSL_CERTFILE=None, THREADLINE_KAFKA_SSL_KEYFILE=None),
        "topics",
        "apply",
        "--dry-run",
        "--prefix",
        prefix,
    )
    assert refused.returncode == 2
    assert "refused the TLS client certificate" in text(refused)


def test_produce_and_consume_round_trip_over_sasl_ssl_with_a_committed_group(secured_kafka, secured_admin, prefix):
    topic = f"{prefix}.round-trip"
    secured_admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    settings = secured_kafka.settings()
    producer = make_producer(settings)
    try:
        for i in range(10):
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode()).get(timeout=30)
    finally:
        producer.close()
    group = f"{prefix}-readers"
    consumer = KafkaConsumer(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=4,
        **settings.kafka.client_config(),
    )
    try:
        got = []
        while len(got) < 4:
            got += [r for rs in consumer.poll(timeout_ms=2000, max_records=4 - len(got)).values() for r in rs]
        assert [r.value for r in got] == [b"v0", b"v1", b"v2", b"v3"]
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1)})
    finally:
        consumer.close()
    [lag] = group_lags(settings, groups=[group])
    assert (lag.lag, lag.topics[0].committed, lag.topics[0].end) == (6, 4, 10)

    # The SCRAM-SHA-256 user reads the same records, through aiokafka (as the faust worker does).
    sha256 = secured_kafka.settings(
        secured_kafka.sasl_env(
            THREADLINE_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
            THREADLINE_KAFKA_SASL_USERNAME=USER_256,
            THREADLINE_KAFKA_SASL_PASSWORD=PASSWORD_256,
        )
    )
    assert aiokafka_values(sha256, topic, 10) == [f"v{i}".encode() for i in range(10)]
    # and through the projectors' consumer, from where it is told to start
    assert batch_consumer_values(sha256, topic, 3, 7) == [f"v{i}".encode() for i in range(3, 10)]


def batch_consumer_values(settings, topic: str, start: int, n: int) -> list[bytes]:
    consumer = BatchConsumer(settings, client_id="secured-projector")
    try:
        assert consumer.partitions_for_topic(topic) == {0}
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek(TopicPartition(topic, 0), start)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < n and time.monotonic() < deadline:
            values += [r.value for rs in consumer.poll(timeout_ms=1000).values() for r in rs]
        return values
    finally:
        consumer.close()


def aiokafka_values(settings, topic: str, n: int) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    async def run():
        consumer = AIOKafkaConsumer(
            topic, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, **aiokafka_config(settings)
        )
        await consumer.start()
        try:
            values = []
            while len(values) < n:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                values += [r.value for rs in batches.values() for r in rs]
            return values
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_groups_command_reports_lag_over_sasl_ssl_as_json(secured_kafka, secured_admin, prefix):
    topic = f"{prefix}.grouped"
    secured_admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
    producer = make_producer(secured_kafka.settings())
    try:
        for i in range(7):
            producer.send(topic, key=b"k", value=b"v", partition=i % 2).get(timeout=30)
    finally:
        producer.close()
    group = f"{prefix}-ops"
    secured_admin.alter_group_offsets(
        group,
        {
            TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1),
            TopicPartition(topic, 1): OffsetAndMetadata(3, "", -1),
        },
    )
    result = cli(secured_kafka.sasl_env(), "groups", "--json", "--group", group)
    assert result.returncode == 0, result.stderr
    [g] = json.loads(result.stdout)
    assert g["group"] == group and g["members"] == 0 and g["lag"] == 3
    assert g["topics"] == [{"topic": topic, "partitions": 2, "committed": 4, "end": 7, "lag": 3}]
