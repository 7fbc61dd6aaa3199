"""Helpers for tests of the stream workers on the real broker: topics of their own, workers as
subprocesses (SIGTERM, then SIGKILL), contacts produced as the gateway writes them, and readers
that decode what the workers wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

import schemas
from connectors.contact import ContactIn, partition_key, to_record
from schemas.codec import make_codec
from streams.app import StreamTopics
from streams.identity_runner import identity_group
from streams.route_runner import route_group
from threadline.kafka import make_producer
from threadline.process import terminate_tree

REPO = Path(__file__).resolve().parents[3]


def create_topics(admin, topics: StreamTopics) -> list[str]:
    specs = topics.specs()
    admin.create_topics(
        {name: {"num_partitions": n, "replication_factor": 1, "configs": cfg} for name, (n, cfg) in specs.items()}
    )
    return list(specs)


def delete_topics(admin, names: list[str]) -> None:
    try:
        admin.delete_topics(names)
    except Exception:  # cleanup of throw-away topics must not fail the test that used them
        pass


@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path
    stages: str | None = None  # what it runs (comma-separated); None: every stage

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            terminate_tree(self.proc.pid, timeout=timeout)
        self.proc.wait(timeout=10)


def start_worker(
    services, *, app_id: str, prefix: str, home: Path, log_path: Path, stages: str | None = None, **env
) -> Worker:
    """A worker process of ``app_id`` running ``stages`` (comma-separated; None: all of them)."""
    home.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        **services.env(),
        "THREADLINE_HOME": str(home),
        "THREADLINE_LOG_LEVEL": "INFO",
        "THREADLINE_STREAMS_STORE": "memory",
        "THREADLINE_STREAMS_SESSION_TIMEOUT": "10",
        **env,
    }
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.tools.cli", "worker", "--app-id", app_id, "--topic-prefix", prefix]
        + (["--stages", stages] if stages else []),
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    return Worker(proc, log_path, stages)


def wait_for_members(admin, group: str, n: int, timeout: float = 120.0) -> None:
    """Until the consumer group is stable with ``n`` members (every worker has its partitions)."""
    deadline = time.monotonic() + timeout
    desc: dict = {}
    while time.monotonic() < deadline:
        desc = admin.describe_groups([group]).get(group, {})
        if desc.get("group_state") == "Stable" and len(desc.get("members", [])) == n:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"consumer group {group} never was stable with {n} members: {desc.get('group_state')}, "
        f"{len(desc.get('members', []))} members"
    )


T_BASE = datetime.now(UTC).replace(microsecond=0)


def make_contact(
    provider_id: str, channel: str, identities: list[dict], *, minutes: float = 0, base: datetime | None = None, **extra
) -> ContactIn:
    body = {
        "provider_id": provider_id,
        "connector": "test",
        "channel": channel,
        "occurred_at": ((base or T_BASE) + timedelta(minutes=minutes)).isoformat(),
        "identities": identities,
    }
    body.update(extra)
    return ContactIn.model_validate(body)


def person(i: int, run: str, base: datetime) -> list[ContactIn]:
    """Person ``i``: a tweet, an email, then a chat where she logs in with both (the chat merges
    the two customers the first two made)."""
    handle = {"kind": "social", "value": f"p{i}_{run}", "platform": "twitter"}
    email = {"kind": "email", "value": f"p{i}.{run}@example.pl"}
    return [
        make_contact(f"tw-{i}-{run}", "twitter", [{**handle, "primary": True}], base=base),
        make_contact(f"mail-{i}-{run}", "email", [{**email, "primary": True}], base=base, minutes=5),
        make_contact(
            f"chat-{i}-{run}",
            "chat",
            [{"kind": "chat_visitor", "value": f"v{i}-{run}", "primary": True}, email, handle],
            base=base,
            minutes=10,
        ),
    ]


class Producer:
    def __init__(self, settings):
        self.settings = settings
        self.codec = make_codec(settings)
        self.producer = make_producer(settings)
        self.partitions: dict[str, int] = {}  # event id -> contacts.v1 partition it was written to

    def contacts(self, topic: str, contacts: list[ContactIn]) -> list[dict]:
        records, futures = [], []
        for c in contacts:
            record = to_record(c, datetime.now(UTC))
            futures.append(
                self.producer.send(topic, key=partition_key(c), value=self.codec.encode(topic, schemas.CONTACT, record))
            )
            records.append(record)
        self.producer.flush(30)
        for record, f in zip(records, futures):
            self.partitions[record["event_id"]] = f.get(timeout=30).partition
        return records

    def raw(self, topic: str, key: bytes, value: bytes, headers=None):
        meta = self.producer.send(topic, key=key, value=value, headers=headers or []).get(timeout=30)
        return meta

    def close(self):
        self.producer.close()


@dataclass
class Reader:
    """Reads every partition of a topic from the beginning and decodes the records."""

    settings: object
    topic: str
    decode: bool = True
    records: list = field(default_factory=list)

    def __post_init__(self):
        self.codec = make_codec(self.settings)
        self.consumer = KafkaConsumer(**self.settings.kafka.client_config())
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def poll(self) -> list:
        for tp, msgs in self.consumer.poll(timeout_ms=300).items():
            for m in msgs:
                value = self.codec.decode(m.value).record if self.decode else m.value
                self.records.append((m, value))
        return self.records

    def wait_for(self, predicate, timeout: float = 90.0, what: str = "records"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            values = [v for _, v in self.records]
            if predicate(values):
                return values
        raise AssertionError(f"{what} never appeared on {self.topic}; saw {len(self.records)} records")

    def values(self) -> list:
        return [v for _, v in self.poll()]

    def close(self):
        self.consumer.close()


def settle(reader: Reader, quiet: float = 3.0, timeout: float = 60.0) -> list:
    """Poll until no new record has come for ``quiet`` seconds (used only after the awaited
    records are in, to catch duplicates that would follow them)."""
    deadline = time.monotonic() + timeout
    last_n, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(reader.poll())
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
    return [v for _, v in reader.records]


@dataclass
class StreamRun:
    """One test's world: its own topics, app id, producer and workers."""

    services: object
    run: str
    prefix: str
    app_id: str
    topics: StreamTopics
    admin: object
    producer: Producer
    home: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, members: int = 1, stages: str | None = None, **env) -> Worker:
        """Start one more worker running ``stages`` (None: every stage) and wait until the groups
        of those stages are stable with ``members`` members."""
        n = len(self.workers) + 1
        w = start_worker(
            self.services,
            app_id=self.app_id,
            prefix=self.prefix,
            home=self.home / f"home{n}",
            log_path=self.home / f"worker{n}.log",
            stages=stages,
            **env,
        )
        self.workers.append(w)
        runs = set(stages.split(",")) if stages else {"route", "identity", "conversations"}
        groups = {
            "conversations": self.app_id,
            "route": route_group(self.app_id),
            "identity": identity_group(self.app_id),
        }
        for stage, group in groups.items():  # faust's group, and the runners' own
            if stage in runs:
                wait_for_members(self.admin, group, members)
        return w

    def reader(self, name: str, **kw) -> Reader:
        return Reader(self.services.settings, getattr(self.topics, name), **kw)


@contextmanager
def stream_run(services, label: str, home: Path) -> Iterator[StreamRun]:
    from threadline.topics import admin_client

    run = uuid.uuid4().hex[:8]
    topics = StreamTopics.prefixed(f"{label}{run}")
    admin = admin_client(services.settings)
    names = create_topics(admin, topics)
    world = StreamRun(
        services, run, f"{label}{run}", f"{label}-{run}", topics, admin, Producer(services.settings), home
    )
    try:
        yield world
    finally:
        for w in world.workers:
            w.stop()
        world.producer.close()
        delete_topics(admin, names)
        admin.close()
