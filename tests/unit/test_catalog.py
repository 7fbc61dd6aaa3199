"""threadline/catalog.py: the topics of design.md, their retention, and drift detection."""

from __future__ import annotations

import pytest

import schemas
from threadline.catalog import CATALOG, EVENT_PARTITIONS, by_name, drift

DESIGN_TOPICS = {"contacts.v1", "ingest.dlq.v1", "identities.v1", "contacts.resolved.v1", "conversations.v1"}
KEYED_EVENT_TOPICS = [
    "contacts.v1",
    "identities.v1",
    "contacts.resolved.v1",
    "conversations.v1",
    "customer-profiles.v1",
]


def test_every_topic_of_the_design_is_declared():
    names = {spec.name for spec in CATALOG}
    assert DESIGN_TOPICS <= names
    assert {"streams.dlq.v1", "projections.dlq.v1", "customer-profiles.v1"} <= names


def test_topic_names_are_unique_and_carry_a_version_suffix():
    names = [spec.name for spec in CATALOG]
    assert len(names) == len(set(names))
    assert all(n.rsplit(".", 1)[-1].startswith("v") and n.rsplit(".", 1)[-1][1:].isdigit() for n in names)


def test_contacts_is_the_system_of_record_kept_forever_and_never_compacted():
    configs = by_name("contacts.v1").configs()
    assert configs["retention.ms"] == "-1"
    assert configs["retention.bytes"] == "-1"
    assert configs["cleanup.policy"] == "delete"
    assert "compact" not in configs["cleanup.policy"]


def test_keyed_event_topics_share_one_partition_count():
    counts = {name: by_name(name).partitions for name in KEYED_EVENT_TOPICS}
    assert set(counts.values()) == {EVENT_PARTITIONS}, counts


def test_customer_profiles_is_a_compacted_snapshot_topic_keeping_tombstones_a_week():
    configs = by_name("customer-profiles.v1").configs()
    assert configs["cleanup.policy"] == "compact"
    assert configs["delete.retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert "retention.bytes" not in configs


def test_dlqs_keep_records_for_a_bounded_time_and_are_not_compacted():
    for spec in CATALOG:
        if ".dlq." in spec.name:
            configs = spec.configs()
            assert configs["cleanup.policy"] == "delete"
            assert int(configs["retention.ms"]) > 0


@pytest.mark.parametrize(
    "topic,subject",
    [
        ("contacts.v1", schemas.CONTACT),
        ("contacts.resolved.v1", schemas.CONTACT),
        ("identities.v1", schemas.IDENTITY_EVENT),
        ("conversations.v1", schemas.CONVERSATION_EVENT),
        ("customer-profiles.v1", schemas.CUSTOMER_PROFILE),
    ],
)
def test_event_topics_carry_a_subject_of_the_event_contract(topic, subject):
    assert by_name(topic).value == subject
    assert subject in schemas.subjects()


def test_unknown_topic_name_raises_key_error():
    with pytest.raises(KeyError):
        by_name("contacts.v2")


# --- drift -----------------------------------------------------------------------------------

CONTACTS = by_name("contacts.v1")
# What Kafka reports for a topic: every config, most of them irrelevant to the catalog.
IN_LINE = {**CONTACTS.configs(), "segment.ms": "604800000", "min.insync.replicas": "2"}


def test_a_topic_in_line_with_the_catalog_has_no_drift():
    assert drift(CONTACTS, EVENT_PARTITIONS, 3, IN_LINE, want_replication=3) == []


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.name)
def test_every_catalog_topic_created_as_declared_has_no_drift(spec):
    assert drift(spec, spec.partitions, 1, spec.configs(), want_replication=1) == []


def test_drift_reports_a_wrong_partition_count():
    (problem,) = drift(CONTACTS, 3, 3, IN_LINE, want_replication=3)
    assert "contacts.v1" in problem and "3 partitions" in problem


def test_drift_reports_a_wrong_replication_factor():
    (problem,) = drift(CONTACTS, EVENT_PARTITIONS, 1, IN_LINE, want_replication=3)
    assert "replication factor 1" in problem


def test_drift_reports_a_compacted_contacts_topic():
    (problem,) = drift(CONTACTS, EVENT_PARTITIONS, 3, {**IN_LINE, "cleanup.policy": "compact"}, want_replication=3)
    assert "cleanup.policy=compact" in problem


@pytest.mark.parametrize("key,value", [("retention.ms", "604800000"), ("retention.bytes", "1073741824")])
def test_drift_reports_a_finite_retention_on_contacts(key, value):
    (problem,) = drift(CONTACTS, EVENT_PARTITIONS, 3, {**IN_LINE, key: value}, want_replication=3)
    assert f"{key}={value}" in problem


def test_drift_reports_a_missing_config():
    configs = {k: v for k, v in IN_LINE.items() if k != "retention.ms"}
    (problem,) = drift(CONTACTS, EVENT_PARTITIONS, 3, configs, want_replication=3)
    assert "retention.ms=None" in problem


def test_drift_reports_every_difference_at_once():
    problems = drift(CONTACTS, 1, 1, {"cleanup.policy": "compact"}, want_replication=3)
    assert len(problems) == 5  # partitions, replication, cleanup.policy, retention.ms, retention.bytes
