"""customer-profiles.v1 (projectors/profiles.py) on the real Kafka, registry and PostgreSQL: read back
with a plain consumer (kafka-python, the registry's HTTP API and fastavro, nothing of Threadline's
codec), it equals the read API's view of the same customers; a merge leaves a tombstone under the
absorbed id; what the outbox holds after a commit is published when a projector starts."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
from datetime import datetime

import fastavro
import httpx
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

import story as st
from fixtures.tokens import API_TOKENS, bearer, token_settings
from projector_events import produce
from projectors.api import create_app
from projectors.profiles import without_marketing
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets

TIMES = {
    "as_of",
    "first_contact_at",
    "last_contact_at",
    "first_seen_at",
    "last_seen_at",
    "first_given_at",
    "last_given_at",
    "opened_at",
    "last_event_at",
    "signal_at",
}


@pytest.fixture
def profiles_topic(new_topic):
    return new_topic(partitions=3, cleanup_policy="compact")


@pytest.fixture
def outbox(pg, prefixed):
    yield
    pg.execute("delete from profile_outbox where projector like %s", (prefixed.projections.prefix + "%",))


def project(settings, sources, codec, topic: str) -> None:
    """The support projector publishing to ``topic`` and marketing (consent on the API), to the end."""
    targets = end_offsets(settings, sources.topics())
    read_model_projector(settings, "support", sources=sources, codec=codec, profiles_topic=topic).run(stop_at=targets)
    read_model_projector(settings, "marketing", sources=sources, codec=codec).run(stop_at=targets)


def read_back(settings, topic: str) -> list[tuple[str, dict | None]]:
    """Every record of ``topic`` in order per key, decoded as a downstream service would."""
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **settings.kafka.client_config())
    schemas_by_id: dict[int, dict] = {}
    out = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for messages in consumer.poll(timeout_ms=1000).values():
                for m in messages:
                    if m.value is None:
                        out.append((m.key.decode(), None))
                        continue
                    assert m.value[:1] == b"\0"
                    (schema_id,) = struct.unpack(">I", m.value[1:5])
                    if schema_id not in schemas_by_id:
                        text = httpx.get(f"{settings.registry.url}/schemas/ids/{schema_id}").json()["schema"]
                        schemas_by_id[schema_id] = fastavro.parse_schema(json.loads(text))
                    out.append(
                        (m.key.decode(), fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schemas_by_id[schema_id]))
                    )
    finally:
        consumer.close()
    return out


def latest(records: list[tuple[str, dict | None]]) -> dict[str, dict | None]:
    """What compaction keeps: the last record per key."""
    return dict(records)


def instants(value):
    """Timestamps as instants (the API writes them in the session's zone, Avro in UTC)."""
    if isinstance(value, dict):
        return {
            k: (datetime.fromisoformat(v) if k in TIMES and isinstance(v, str) else instants(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [instants(v) for v in value]
    return value


def api_view(client: TestClient, customer_id: str) -> dict:
    """The same customer through the read API: the card (support) and its consent (marketing);
    no sentiment when the consent withdrew marketing (the topic honours the ledger, as marketing does)."""
    card = client.get(f"/customers/{customer_id}", headers=bearer(API_TOKENS["support"]))
    assert card.status_code == 200, card.text
    consent = client.get(f"/marketing/customers/{customer_id}/consent", headers=bearer(API_TOKENS["marketing"]))
    assert consent.status_code == 200, consent.text
    c = card.json()
    return instants(
        without_marketing(
            {
                "customer_id": c["customer_id"],
                "merged_ids": c["merged_ids"],
                "first_contact_at": c["first_contact_at"],
                "last_contact_at": c["last_contact_at"],
                "contacts": c["contacts"],
                "channels": c["channels"],
                "language": c["language"],
                "identities": c["identities"],
                "facts": c["facts"],
                "open_conversations": [
                    {
                        k: o[k]
                        for k in ("conversation_id", "channel", "channels", "opened_at", "last_event_at", "sla_state")
                    }
                    for o in c["open_conversations"]
                ],
                "last_order": c["last_order"],
                "consent": [
                    {k: x[k] for k in ("channel", "purpose", "granted", "source", "signal_at")}
                    for x in consent.json()["items"]
                ],
                "sentiment": c["sentiment"],
            },
            consent.json()["items"],
        )
    )


def without_as_of(profile: dict) -> dict:
    return {k: v for k, v in profile.items() if k != "as_of"}


@pytest.fixture
def api(prefixed):
    with TestClient(create_app(prefixed.model_copy(update=token_settings()))) as client:
        yield client


def test_profiles_read_back_equal_the_api_and_a_merge_tombstones_the_absorbed_id(
    prefixed, sources, codec, unique, profiles_topic, outbox, api, pg
):
    s = st.build(unique)
    observed, merged = s.identities
    st.publish(prefixed, codec, sources, dataclasses.replace(s, identities=[observed]))
    project(prefixed, sources, codec, profiles_topic)

    before = latest(read_back(prefixed, profiles_topic))
    assert set(before) == {s.giulia, s.giulia_old, s.emre}
    for cid in (s.giulia, s.giulia_old, s.emre):
        assert without_as_of(before[cid]) == api_view(api, cid), cid
    assert before[s.emre]["consent"] and before[s.giulia]["last_order"] == "4711"
    assert before[s.giulia]["sentiment"]["latest"] is not None and before[s.giulia]["facts"]
    assert before[s.giulia]["open_conversations"][0]["conversation_id"] == s.conv_giulia

    produce(prefixed, codec, sources.identities, "identity", [merged])  # giulia absorbs her older id
    project(prefixed, sources, codec, profiles_topic)

    records = read_back(prefixed, profiles_topic)
    after = latest(records)
    assert after[s.giulia_old] is None, "the absorbed id ends in a tombstone"
    assert (s.giulia_old, None) in records
    survivor = after[s.giulia]
    assert without_as_of(survivor) == api_view(api, s.giulia)
    assert survivor["merged_ids"] == [s.giulia_old]
    assert ("chat_visitor", f"v-{unique}") in {(i["kind"], i["value"]) for i in survivor["identities"]}
    assert without_as_of(after[s.emre]) == api_view(api, s.emre)
    assert (
        pg.execute(
            "select count(*) from profile_outbox where projector = %s", (f"{prefixed.projections.prefix}support",)
        ).fetchone()[0]
        == 0
    )


def test_what_the_outbox_holds_after_a_commit_is_published_when_the_projector_starts(
    prefixed, sources, codec, unique, profiles_topic, outbox, pg
):
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    project(prefixed, sources, codec, profiles_topic)
    before = read_back(prefixed, profiles_topic)
    # a crash after the commit, before Kafka acknowledged the profile: the customer stays queued
    pg.execute(
        "insert into profile_outbox (projector, customer_id) values (%s, %s)",
        (f"{prefixed.projections.prefix}support", s.emre),
    )
    project(prefixed, sources, codec, profiles_topic)  # nothing new to read: only the outbox
    after = read_back(prefixed, profiles_topic)
    assert len(after) == len(before) + 1
    emre_before, emre_after = ([v for k, v in records if k == s.emre] for records in (before, after))
    assert len(emre_after) == len(emre_before) + 1
    assert without_as_of(emre_after[-1]) == without_as_of(emre_before[-1])  # the same profile again: harmless


def test_publish_profiles_backfills_every_customer_of_a_projection_that_published_none(
    prefixed, sources, codec, unique, profiles_topic, outbox, api, tmp_path
):
    """A projection built before anyone read customer-profiles.v1 (its projector published nothing):
    `threadline publish-profiles` publishes every customer's profile, equal to the read API's, and a
    tombstone for the id a merge absorbed."""
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    targets = end_offsets(prefixed, sources.topics())
    for projection in ("support", "marketing"):
        read_model_projector(prefixed, projection, sources=sources, codec=codec).run(stop_at=targets)
    assert read_back(prefixed, profiles_topic) == []

    done = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "publish-profiles", "--topic", profiles_topic],
        env={**os.environ, **prefixed.to_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"published to {profiles_topic}" in done.stdout

    after = latest(read_back(prefixed, profiles_topic))
    assert after[s.giulia_old] is None, "the absorbed id ends in a tombstone"
    for cid in (s.giulia, s.emre):
        assert without_as_of(after[cid]) == api_view(api, cid), cid


def test_publish_profiles_without_a_projection_says_so(prefixed, tmp_path):
    env = {**os.environ, **prefixed.model_copy(update={"projection_prefix": "nothing_here_"}).to_env()}
    done = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "publish-profiles"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no support projection" in done.stderr and "threadline project" in done.stderr
