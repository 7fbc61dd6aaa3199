"""KafkaTopic resources come from the topic catalog, and drift is caught.

deploy/k8s/base/kafka/topics.yaml is written by `threadline topics manifests`; the committed file
must be exactly what the command writes now, and hold every catalog topic with its partitions and
configs.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from typer.testing import CliRunner

from tests.deploy.test_k8s_schemas import DNS1123_LABEL, K8S, REPO, validate_document
from threadline.catalog import CATALOG, TopicSpec
from threadline.tools.cli import app
from threadline.tools.k8s import DEFAULT_OUT, resource_name, topic_resource, topics_manifest

TOPICS_FILE = K8S / "base" / "kafka" / "topics.yaml"


def committed_topics() -> list[dict]:
    return [d for d in yaml.safe_load_all(TOPICS_FILE.read_text()) if d]


def test_the_committed_file_is_what_the_generator_writes():
    assert REPO / DEFAULT_OUT == TOPICS_FILE
    assert TOPICS_FILE.read_text(encoding="utf-8") == topics_manifest(), (
        "deploy/k8s/base/kafka/topics.yaml differs from the catalog: run `threadline topics manifests`")


def test_every_catalog_topic_appears_once_with_its_partitions_and_configs():
    docs = committed_topics()
    by_topic = {d["spec"]["topicName"]: d for d in docs}
    assert len(docs) == len(CATALOG) == len(by_topic) == 14  # privacy.erasures.v1 the last added
    for spec in CATALOG:
        doc = by_topic[spec.name]
        assert doc["kind"] == "KafkaTopic" and doc["apiVersion"] == "kafka.strimzi.io/v1"
        assert doc["metadata"]["name"] == spec.name.replace(".", "-")
        assert DNS1123_LABEL.match(doc["metadata"]["name"])
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "threadline"
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == 3
        assert doc["spec"]["config"] == {**spec.configs(), "min.insync.replicas": 2}
        assert all(isinstance(v, str) for k, v in doc["spec"]["config"].items() if k != "min.insync.replicas"), \
            "catalog configs are strings; YAML must not turn -1 or 2592000000 into numbers"
        validate_document(doc)


def test_the_yaml_reads_back_as_the_resources_it_was_made_from():
    text = topics_manifest(cluster="other", replicas=5, min_insync=3)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs == [topic_resource(s, "other", 5, 3) for s in CATALOG]
    assert docs[0]["spec"]["config"]["retention.ms"] == "-1"
    assert {d["metadata"]["labels"]["strimzi.io/cluster"] for d in docs} == {"other"}


def test_names_are_dns_1123_and_clashes_or_impossible_names_are_refused():
    assert resource_name("streams.identity-graph.changelog.v1") == "streams-identity-graph-changelog-v1"
    assert resource_name("Some_Topic.V2") == "some-topic-v2"
    with pytest.raises(ValueError, match="no valid Kubernetes name"):
        resource_name("...")
    with pytest.raises(ValueError, match="no valid Kubernetes name"):
        resource_name("x" * 64)
    twin = dataclasses.replace(CATALOG[0], name=CATALOG[0].name.replace(".", "_"))
    with pytest.raises(ValueError, match="same Kubernetes name: contacts-v1"):
        topics_manifest([CATALOG[0], twin])
    with pytest.raises(ValueError, match="min.insync.replicas 3"):
        topic_resource(TopicSpec("t.v1", 1, key="k", value="v"), replicas=2, min_insync=3)


# ---------------------------------------------------------------- the command


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["topics", "manifests", *args])


def test_check_passes_on_the_committed_file(cli):
    result = cli("--check", "--out", str(TOPICS_FILE))
    assert result.exit_code == 0, result.output
    assert "in line" in result.output


def test_check_exits_3_when_the_file_drifts_and_writing_fixes_it(cli, tmp_path):
    out = tmp_path / "k8s" / "topics.yaml"
    assert cli("--check", "--out", str(out)).exit_code == 3  # missing
    written = cli("--out", str(out))
    assert written.exit_code == 0 and "14 topics" in written.output
    assert out.read_text() == TOPICS_FILE.read_text()
    assert cli("--check", "--out", str(out)).exit_code == 0

    out.write_text(out.read_text().replace("partitions: 6", "partitions: 12", 1))
    drifted = cli("--check", "--out", str(out))
    assert drifted.exit_code == 3
    assert "differs from the catalog" in drifted.output
    assert "partitions: 12" in out.read_text(), "--check writes nothing"

    # the same file checked against other options differs too
    assert cli("--out", str(out)).exit_code == 0
    assert cli("--check", "--out", str(out), "--replicas", "5").exit_code == 3
    assert cli("--check", "--out", str(out), "--cluster", "other").exit_code == 3


def test_options_reach_the_resources_and_bad_ones_exit_2(cli, tmp_path):
    out = tmp_path / "topics.yaml"
    assert cli("--out", str(out), "--replicas", "5", "--min-insync", "3", "--cluster", "blue").exit_code == 0
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert {(d["spec"]["replicas"], d["spec"]["config"]["min.insync.replicas"], d["metadata"]["labels"]["strimzi.io/cluster"])
            for d in docs} == {(5, 3, "blue")}
    assert cli("--out", str(out), "--replicas", "1", "--min-insync", "2").exit_code == 2
