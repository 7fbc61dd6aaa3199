"""`threadline topics apply` on the real broker: idempotent creation, drift as an error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from threadline.catalog import CATALOG, TopicSpec
from threadline.errors import TopicDriftError
from threadline.topics import apply, describe


def test_apply_creates_every_catalog_topic_with_its_declared_settings(settings, admin, catalog_topics):
    found = describe(admin, [t.name for t in CATALOG])
    assert set(found) == {t.name for t in CATALOG}
    contacts = found["contacts.v1"]
    assert contacts[0] == 6
    assert contacts[2]["retention.ms"] == "-1" and contacts[2]["retention.bytes"] == "-1"
    assert contacts[2]["cleanup.policy"] == "delete"
    assert found["customer-profiles.v1"][2]["cleanup.policy"] == "compact"


def test_apply_twice_creates_nothing_the_second_time(settings, catalog_topics):
    report = apply(settings)
    assert report.created == []
    assert sorted(report.in_line) == sorted(t.name for t in CATALOG)


def test_a_topic_with_other_partitions_or_retention_is_reported_as_drift(settings, new_topic, unique):
    name = new_topic(partitions=2, retention_ms="86400000")
    spec = TopicSpec(name, 3, key="k", value="v")
    with pytest.raises(TopicDriftError) as caught:
        apply(settings, (spec,))
    text = str(caught.value)
    assert "2 partitions, catalog says 3" in text
    assert "retention.ms=86400000, catalog says -1" in text


def test_dry_run_creates_nothing_and_lists_what_it_would_create(settings, admin, unique):
    spec = TopicSpec(f"test.{unique}.dry", 1, key="k", value="v")
    report = apply(settings, (spec,), dry_run=True)
    assert report.planned == [spec.name]
    assert spec.name not in admin.list_topics()


def test_cli_exits_3_and_names_the_drift_when_settings_disagree_with_the_cluster(services, catalog_topics):
    env = {**os.environ, **services.env(), "THREADLINE_REPLICATION_FACTOR": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    assert "contacts.v1: replication factor 1, settings say 3" in " ".join(result.stderr.split())


def test_cli_apply_in_line_exits_0(services, catalog_topics):
    env = {**os.environ, **services.env()}
    result = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "in line   contacts.v1" in result.stdout
