"""The identity stage's runner (streams.identity_runner) on the real broker: `threadline worker
--stages identity` killed with SIGKILL mid-stream and restarted rebuilds its tables from the
changelogs it wrote (memory tables: from their beginning; its RocksDB stores on the same disk:
only what came after the offsets they recorded) and ends with the graph a clean run over the
same graph topic gives; a worker paused past its session timeout, whose
partition went to another worker, changes nothing anyone recovers once it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

import schemas
from schemas.codec import make_codec
from connectors.contact import to_record
from streams.identity import IdentityGraph
from streams.identity_runner import WRITER_HEADER, identity_group, replay
from streams.identity_stage import GraphTable, IdentityStage, StateTable
from streams.identity_store import RocksStore
from streams.stage import Outputs, StageContext
from tests.integration.streams.stream_helpers import REPO, Worker, person, stream_run, wait_for_members

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def start_identity_worker(world, n: int, home_of: int | None = None, **env) -> Worker:
    """Worker ``n`` (its log ``identity<n>.log``) in the home of worker ``home_of`` (default its own:
    a restarted worker on the same disk is given the home of the one it replaces)."""
    home = world.home / f"home{home_of or n}"
    home.mkdir(parents=True, exist_ok=True)
    log_path = world.home / f"identity{n}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "threadline.tools.cli",
            "worker",
            "--app-id",
            world.app_id,
            "--topic-prefix",
            world.prefix,
            "--stages",
            "identity",
        ],
        env={
            **os.environ,
            **world.services.env(),
            "THREADLINE_HOME": str(home),
            "THREADLINE_LOG_LEVEL": "INFO",
            "THREADLINE_STREAMS_STORE": "memory",
            "THREADLINE_STREAMS_SESSION_TIMEOUT": "6",
            "THREADLINE_WORKER_OPS_PORT": "0",
            **env,
        },
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    w = Worker(proc, log_path)
    world.workers.append(w)
    return w


def graph_values(world, n_people: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    """Contacts as the route stage forwards them to the graph topic: per person a tweet, an
    email, and a chat naming both (a merge of two customers)."""
    codec = make_codec(world.services.settings)
    out = []
    for i in range(start, start + n_people):
        for c in person(i, world.run, BASE):
            record = to_record(c, datetime.now(UTC))
            out.append((f"k{i}".encode(), codec.encode(world.topics.contacts, schemas.CONTACT, record)))
    return out


def produce(world, values: list[tuple[bytes, bytes]]) -> None:
    for key, value in values:
        world.producer.producer.send(world.topics.graph, key=key, value=value, headers=[("kind", b"contact")])
    world.producer.producer.flush(30)


def read_all(settings, topic: str) -> list:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list = []
        while consumer.position(tp) < end:
            for msgs in consumer.poll(timeout_ms=500).values():
                out += msgs
        return out
    finally:
        consumer.close()


def committed(world, group: str) -> int:
    offsets = world.admin.list_group_offsets(group)
    offsets = offsets.get(group, offsets) if isinstance(offsets, dict) else offsets
    meta = offsets.get(TopicPartition(world.topics.graph, 0))
    return meta.offset if meta is not None else -1


def wait_committed(world, group: str, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while committed(world, group) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} committed {committed(world, group)} of {n} graph records")
        time.sleep(0.3)


def recovered(settings, table: StateTable | GraphTable, compacted: bool = False) -> dict:
    """A table as the runner recovers it: its changelog replayed with its fences (the graph's
    records parsed, by stored key; the contacts' values). ``compacted``: the changelog as log
    compaction leaves it, each key's latest record only (fences included, in offset order)."""
    records = read_all(settings, table.topic)
    if compacted:
        latest = {r.key: r for r in records}
        records = sorted(latest.values(), key=lambda r: r.offset)
    replay([(r.key, r.value, dict(r.headers or ()).get(WRITER_HEADER)) for r in records], table)
    return table.records() if isinstance(table, GraphTable) else table.snapshot()


def clean_run(world) -> tuple[dict, dict]:
    """The graph and contacts tables of one run of the stage, in this process, over the graph
    topic's records in their order."""
    names = world.topics
    graph, contacts = GraphTable(names.graph_changelog), StateTable(names.contacts_changelog)
    codec = make_codec(world.services.settings)
    stage = IdentityStage(StageContext(None, "clean", names.dlq), codec, names, IdentityGraph(graph), contacts)  # type: ignore[arg-type]
    stage.process(read_all(world.services.settings, names.graph), Outputs())
    return graph.records(), contacts.values


def changelog_end(settings, topic: str) -> int:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def local_store(world, n: int, topic: str) -> dict:
    """What worker ``n``'s RocksDB store of ``topic`` holds (the worker stopped): the graph's
    records parsed, by stored key; the contacts' JSON values."""
    store = RocksStore(world.home / f"home{n}" / "faust" / world.app_id / "identity" / f"{topic}.db")
    try:
        if topic == world.topics.graph_changelog:
            return GraphTable(topic, store).records()
        return StateTable(topic, store).snapshot()
    finally:
        store.close()


def owner_after_rebalance(workers: list[Worker], timeout: float = 60.0) -> tuple[Worker, Worker]:
    """The worker that recovered the tables in the group's latest generation, and the other."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gens = {
            n: max(
                (line["generation"] for line in w.log_lines() if line.get("event") == "identity_state_recovered"),
                default=0,
            )
            for n, w in enumerate(workers)
        }
        best = max(gens, key=gens.__getitem__)
        if gens[best] > 1:
            return workers[best], workers[1 - best]
        time.sleep(0.5)
    raise AssertionError("no worker recovered the identity tables after the rebalance")


@pytest.fixture
def world(services, tmp_path: Path):
    with stream_run(services, "idr", tmp_path) as w:
        yield w


def test_a_killed_identity_worker_restarts_to_the_graph_of_a_clean_run(world, services):
    group = identity_group(world.app_id)
    first = graph_values(world, 40)
    w1 = start_identity_worker(world, 1)
    wait_for_members(world.admin, group, 1)
    produce(world, first)
    wait_committed(world, group, 30)  # some batches done, maybe not all
    os.killpg(w1.proc.pid, signal.SIGKILL)
    w1.proc.wait(timeout=10)

    second = graph_values(world, 20, start=40)
    produce(world, first[:15] + second)  # redelivered contacts among new ones
    w2 = start_identity_worker(world, 2)
    wait_for_members(world.admin, group, 1)
    total = len(first) + 15 + len(second)
    wait_committed(world, group, total)

    graph, contacts = clean_run(world)
    assert recovered(services.settings, GraphTable(world.topics.graph_changelog)) == graph
    assert recovered(services.settings, StateTable(world.topics.contacts_changelog)) == contacts
    assert len(contacts) == len(first) + len(second)
    [rec] = [line for line in w2.log_lines() if line.get("event") == "identity_state_recovered"]
    assert rec["graph_keys"] > 0 and rec["contacts"] >= 30  # rebuilt from the changelogs, not from nothing

    w2.proc.send_signal(signal.SIGTERM)
    w2.proc.wait(timeout=30)


def test_a_killed_worker_on_its_disk_reads_only_the_changelogs_tail(world, services):
    """With its RocksDB store (THREADLINE_STREAMS_STORE=rocksdb), a worker killed with SIGKILL and
    restarted on the same disk reads the changelogs from the offsets its store recorded, not from
    their beginnings, and its store ends as a clean run's tables."""
    group = identity_group(world.app_id)
    first = graph_values(world, 40)
    w1 = start_identity_worker(world, 1, THREADLINE_STREAMS_STORE="rocksdb")
    wait_for_members(world.admin, group, 1)
    produce(world, first)
    wait_committed(world, group, len(first))
    os.killpg(w1.proc.pid, signal.SIGKILL)
    w1.proc.wait(timeout=10)
    settings = services.settings
    names = world.topics
    before = {t: changelog_end(settings, t) for t in (names.graph_changelog, names.contacts_changelog)}
    assert sum(before.values()) > 100

    second = graph_values(world, 20, start=40)
    produce(world, first[:15] + second)  # redelivered contacts among new ones
    w2 = start_identity_worker(world, 2, home_of=1, THREADLINE_STREAMS_STORE="rocksdb")
    wait_for_members(world.admin, group, 1)
    total = len(first) + 15 + len(second)
    wait_committed(world, group, total)
    [rec] = [line for line in w2.log_lines() if line.get("event") == "identity_state_recovered"]
    # everything w1 wrote was committed and stored: read from its stores' offsets on, the new
    # fence only (the memory tables read every record of both changelogs)
    assert rec["read_records"] < sum(before.values()) / 10, rec
    assert rec["from_offsets"] == {t: end for t, end in before.items()}, rec
    assert rec["rebuilt"] == []
    w2.proc.send_signal(signal.SIGTERM)
    w2.proc.wait(timeout=30)

    graph, contacts = clean_run(world)
    assert local_store(world, 1, names.graph_changelog) == graph
    assert local_store(world, 1, names.contacts_changelog) == contacts
    assert recovered(settings, GraphTable(names.graph_changelog)) == graph
    assert len(contacts) == len(first) + len(second)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_a_worker_that_lost_the_partition_while_paused_changes_nothing_recovered(world, services, store):
    """Worker 1 is stopped (SIGSTOP) past its session timeout with records to process; worker 2
    is given the partition, recovers and processes them. Worker 1 resumes: whatever it still
    writes before it learns it lost the partition is not what any replay gives (nor what its
    local store keeps, with ``rocksdb``)."""
    group = identity_group(world.app_id)
    w1 = start_identity_worker(world, 1, THREADLINE_STREAMS_STORE=store)
    wait_for_members(world.admin, group, 1)
    produce(world, graph_values(world, 10))
    wait_committed(world, group, 30)
    w2 = start_identity_worker(world, 2, THREADLINE_STREAMS_STORE=store)
    wait_for_members(world.admin, group, 2)
    owner, other = owner_after_rebalance([w1, w2])
    os.killpg(owner.proc.pid, signal.SIGSTOP)
    try:
        produce(world, graph_values(world, 10, start=10))
        wait_committed(world, group, 60, timeout=120)  # the other worker took the partition over
    finally:
        os.killpg(owner.proc.pid, signal.SIGCONT)
    time.sleep(8)  # the resumed worker learns it lost the partition (or writes what it had)
    produce(world, graph_values(world, 5, start=20))
    wait_committed(world, group, 75)
    graph, contacts = clean_run(world)
    assert recovered(services.settings, GraphTable(world.topics.graph_changelog)) == graph
    assert recovered(services.settings, StateTable(world.topics.contacts_changelog)) == contacts
    # compaction keeps each key's latest record: the owner wrote its value again after the paused
    # worker's records of a key, so a worker with no store recovers the same tables from it
    assert recovered(services.settings, GraphTable(world.topics.graph_changelog), compacted=True) == graph
    assert recovered(services.settings, StateTable(world.topics.contacts_changelog), compacted=True) == contacts
    assert any(line.get("event") == "identity_state_recovered" for line in other.log_lines())
    if store == "rocksdb":  # the last owner's store is the clean run's tables, zombie writes or not
        last = {
            n: max(line["generation"] for line in w.log_lines() if line.get("event") == "identity_state_recovered")
            for n, w in ((1, w1), (2, w2))
            if any(line.get("event") == "identity_state_recovered" for line in w.log_lines())
        }
        w1.stop()
        w2.stop()
        n = max(last, key=last.__getitem__)
        assert local_store(world, n, world.topics.graph_changelog) == graph
        assert local_store(world, n, world.topics.contacts_changelog) == contacts


def test_upgraded_from_the_faust_agent_the_stage_starts_at_the_faust_groups_commit(world, services):
    """The faust group (the app id) had committed the graph topic up to some offset: the stage's
    new group starts there, not at the topic's beginning."""
    from kafka.structs import OffsetAndMetadata

    values = graph_values(world, 4)
    produce(world, values)
    done = 6  # what the faust agent had processed and committed
    faust_group = KafkaConsumer(
        group_id=world.app_id, enable_auto_commit=False, **services.settings.kafka.client_config()
    )
    try:
        faust_group.commit({TopicPartition(world.topics.graph, 0): OffsetAndMetadata(done, "", -1)})
    finally:
        faust_group.close()
    w = start_identity_worker(world, 1)
    group = identity_group(world.app_id)
    wait_for_members(world.admin, group, 1)
    wait_committed(world, group, len(values))
    resolved = [line["offset"] for line in w.log_lines() if line.get("event") == "contact_resolved"]
    assert sorted(resolved) == list(range(done, len(values)))
