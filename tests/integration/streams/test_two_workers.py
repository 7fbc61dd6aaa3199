"""Two stream workers on six partitions: identities of one customer on different partitions give
one customer; each customer's conversation has one writer; merges and an operator's unlink are
events downstream, with the affected contacts re-keyed. In two layouts: two workers running every
stage, and the deployments' (deploy/): one worker running the identity stage alone, the other
the route and conversations stages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from streams.identity import customer_id_for
from tests.integration.streams.stream_helpers import REPO, person, settle, stream_run

CUSTOMERS = 10
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


# worker → the stages it runs (None: every stage), in start order
LAYOUTS = {"combined": [None, None], "split": ["identity", "route,conversations"]}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def cluster(services, tmp_path_factory, request):
    layout = LAYOUTS[request.param]
    with stream_run(services, "two", tmp_path_factory.mktemp("two-workers")) as world:
        readers = {name: world.reader(name) for name in ("resolved", "identities", "conversations")}
        if request.param == "combined":
            world.worker()
            world.worker(members=2)
        else:
            for stages in layout:
                world.worker(stages=stages)
        try:
            yield world.run, world.prefix, world.topics, world.workers, world.producer, readers
        finally:
            for r in readers.values():
                r.close()


def people(run):
    """Each person: a tweet, an email, then a chat where she logs in with both."""
    return [person(i, run, BASE) for i in range(CUSTOMERS)]


def latest_customer(resolved_values):
    latest = {}
    for v in resolved_values:
        latest[v["event_id"]] = v["customer_id"]
    return latest


@pytest.fixture(scope="module")
def sent(cluster):
    run, prefix, topics, workers, producer, readers = cluster
    # Round by round (every tweet, then every email, then every chat), each round in parallel
    # over the partitions: the chat is what reveals that the tweet and the email are one person.
    rounds = []
    for contacts in zip(*people(run)):
        records = producer.contacts(topics.contacts, list(contacts))
        readers["resolved"].wait_for(
            lambda vs, want={r["event_id"] for r in records}: want <= {v["event_id"] for v in vs},
            what="a round of contacts resolved",
        )
        rounds.append([r["event_id"] for r in records])
    ids = [list(g) for g in zip(*rounds)]
    survivors = {customer_id_for(g[0]) for g in ids}
    readers["conversations"].wait_for(
        lambda vs: (
            {(v["customer_id"], v["contact_event_id"]) for v in vs if v["event_type"] == "message_appended"}
            >= {(customer_id_for(g[0]), e) for g in ids for e in g}
        ),
        what="every contact under its survivor",
    )
    settle(readers["conversations"])
    return ids, survivors


def test_identities_on_different_partitions_resolve_to_one_customer(cluster, sent):
    run, prefix, topics, workers, producer, readers = cluster
    ids, _ = sent
    spread = [g for g in ids if len({producer.partitions[e] for e in g}) > 1]
    assert spread, "the test needs customers whose identities sit on different contacts.v1 partitions"
    latest = latest_customer(readers["resolved"].values())
    for g in ids:
        assert {latest[e] for e in g} == {customer_id_for(g[0])}


def test_each_customer_is_one_conversation_written_by_one_worker(cluster, sent):
    run, prefix, topics, workers, producer, readers = cluster
    ids, survivors = sent
    events = readers["conversations"].values()
    for g in ids:
        cust = customer_id_for(g[0])
        convs = {
            v["conversation_id"] for v in events if v["customer_id"] == cust and v["event_type"] == "message_appended"
        }
        assert len(convs) == 1
    writers = defaultdict(set)
    graph_writers = set()
    for n, w in enumerate(workers):
        for line in w.log_lines():
            if line.get("event", "").startswith("conversation_") and line.get("customer_id") in survivors:
                writers[line["customer_id"]].add(n)
            if line.get("event") == "contact_resolved":
                graph_writers.add(n)
    assert set(writers) == survivors
    assert all(len(w) == 1 for w in writers.values()), dict(writers)
    assert len(graph_writers) == 1  # the identity graph has a single writer
    stages = {n: w.stages for n, w in enumerate(workers)}
    if stages[0] == "identity":  # split: the graph in the identity worker, stitching in the other
        assert graph_writers == {0} and set().union(*writers.values()) == {1}


def test_a_merge_is_an_event_and_the_absorbed_contacts_are_rekeyed_to_the_survivor(cluster, sent):
    run, prefix, topics, workers, producer, readers = cluster
    ids, _ = sent
    identity_events = readers["identities"].values()
    resolved = readers["resolved"].poll()
    for tweet, mail, chat in ids:
        survivor, absorbed = customer_id_for(tweet), customer_id_for(mail)
        assert any(
            e["event_type"] == "merged" and e["customer_id"] == survivor and e["related_customer_ids"] == [absorbed]
            for e in identity_events
        )
        rekeyed = [
            (v["customer_id"], dict(m.headers)["rekeyed_from"])
            for m, v in resolved
            if v["event_id"] == mail and "rekeyed_from" in dict(m.headers)
        ]
        assert (survivor, absorbed.encode()) in rekeyed


def test_an_operator_unlink_splits_the_customer_downstream(cluster, sent, services):
    run, prefix, topics, workers, producer, readers = cluster
    ids, _ = sent
    tweet, mail, chat = ids[0]
    survivor, split_off = customer_id_for(tweet), customer_id_for(mail)
    env = {**services.env(), "THREADLINE_LOG_FORMAT": "json"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "threadline.tools.cli",
            "identity",
            "unlink",
            f"email:p0.{run}@example.pl",
            f"social:twitter:p0_{run}",
            "--topic-prefix",
            prefix,
        ],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    events = readers["identities"].wait_for(
        lambda vs: any(v["event_type"] == "unmerged" and v["customer_id"] == survivor for v in vs), what="unmerged"
    )
    [unmerged] = [v for v in events if v["event_type"] == "unmerged" and v["customer_id"] == survivor]
    assert unmerged["related_customer_ids"] == [split_off] and unmerged["reason"] == "unlinked_by_operator"
    # The email and the chat carry the email identity: they move to the split-off customer.
    resolved = readers["resolved"].wait_for(
        lambda vs: {v["event_id"] for v in vs if v["customer_id"] == split_off} >= {mail, chat},
        what="re-keyed contacts",
    )
    assert latest_customer(resolved)[tweet] == survivor
    assert {latest_customer(resolved)[e] for e in (mail, chat)} == {split_off}
    readers["conversations"].wait_for(
        lambda vs: any(v["event_type"] == "opened" and v["customer_id"] == split_off for v in vs),
        what="the split-off customer's conversation",
    )
