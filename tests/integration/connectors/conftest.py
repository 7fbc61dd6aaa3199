"""Connector tests on the real broker: throw-away contacts and DLQ topics per module, the real
gateway app (starlette's TestClient runs its lifespan: real producer, real codec and registry)."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from fixtures.providers import SECRETS
from fixtures.tokens import token_settings
from threadline.catalog import EVENT_PARTITIONS


@pytest.fixture(scope="module")
def topics(settings):
    from threadline.topics import admin_client

    run = uuid.uuid4().hex[:8]
    names = {"contacts": f"test.connectors.{run}.contacts", "dlq": f"test.connectors.{run}.dlq"}
    admin = admin_client(settings)
    admin.create_topics(
        {
            names["contacts"]: {"num_partitions": EVENT_PARTITIONS, "replication_factor": 1},
            names["dlq"]: {"num_partitions": 1, "replication_factor": 1},
        }
    )
    yield names
    try:
        admin.delete_topics(list(names.values()))
    finally:
        admin.close()


@pytest.fixture(scope="module")
def connector_settings(settings, tmp_path_factory):
    return settings.model_copy(
        update={
            **{k: SecretStr(v) for k, v in SECRETS.items()},
            **token_settings(),
            "home": tmp_path_factory.mktemp("connectors-home"),
        }
    )


@pytest.fixture(scope="module")
def gateway(connector_settings, topics):
    from fastapi.testclient import TestClient

    from connectors.gateway import create_app
    from schemas.codec import make_codec

    app = create_app(
        connector_settings,
        codec_factory=lambda: make_codec(connector_settings),
        contacts_topic=topics["contacts"],
        dlq_topic=topics["dlq"],
    )
    with TestClient(app) as client:
        yield client


class TopicReader:
    """Reads a topic from its current end: ``mark()`` then ``read(n)`` returns what came after."""

    def __init__(self, settings, topic: str):
        from schemas.codec import make_codec

        self.codec = make_codec(settings)
        self.consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka.client_config())
        self.tps = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or [0]]
        self.consumer.assign(self.tps)
        self.mark()

    def mark(self) -> None:
        self.start = self.consumer.end_offsets(self.tps)
        for tp, off in self.start.items():
            self.consumer.seek(tp, off)

    def count(self) -> int:
        end = self.consumer.end_offsets(self.tps)
        return sum(end[tp] - self.start[tp] for tp in self.tps)

    def read(self, n: int, timeout: float = 30.0) -> list:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for recs in self.consumer.poll(timeout_ms=200).values():
                out.extend(recs)
        assert len(out) >= n, f"read {len(out)} of {n} records"
        return out

    def decoded(self, n: int) -> list[dict]:
        return [self.codec.decode(r.value).record for r in self.read(n)]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def contacts(connector_settings, topics):
    reader = TopicReader(connector_settings, topics["contacts"])
    yield reader
    reader.close()


@pytest.fixture
def dlq(connector_settings, topics):
    reader = TopicReader(connector_settings, topics["dlq"])
    yield reader
    reader.close()
