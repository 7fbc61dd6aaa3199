"""The ingest gateway and the stream worker as real processes on the secured broker (conftest.py):
SASL_SSL with SCRAM-SHA-512, the password from a file, the broker's certificate trusted through the
test's CA. The schema registry (and Postgres, for the settings) are the shared local stack's.

    POST /contacts ─► gateway ─► contacts.v1 ─► worker (faust/aiokafka) ─► contacts.resolved.v1
                                                                      └─► conversations.v1

The private broker is this session's own, so the gateway and the worker use the catalog's names.
"""

from __future__ import annotations

import time
import uuid

import httpx
import psutil
import pytest

from streams.app import APP_ID
from streams.route_runner import route_group
from tests.e2e.test_walking_skeleton import contact
from tests.integration.secured.test_secured_kafka import cli, text
from tests.integration.streams.stream_helpers import Reader
from tests.integration.test_metrics import scrape, total
from threadline import process
from threadline.catalog import CONTACTS, CONTACTS_RESOLVED, CONVERSATIONS
from threadline.groups import GroupLag, group_lags
from threadline.process import free_port, wait_until
from threadline.tools.stack import apps

PIPELINE = ("gateway", "worker")


@pytest.fixture
def secured_pipeline(secured_kafka, services, tmp_path):
    """``threadline topics apply``, then the gateway and the worker started as ``threadline demo``
    starts them, every Kafka client of theirs on the SASL_SSL listener. Yields the settings."""
    password_file = tmp_path / "kafka-password"
    password_file.write_text(secured_kafka.settings().kafka.sasl_secret() + "\n")
    env = {
        **services.env(),
        **secured_kafka.sasl_env(
            THREADLINE_KAFKA_SASL_PASSWORD=None, THREADLINE_KAFKA_SASL_PASSWORD_FILE=str(password_file)
        ),
        "THREADLINE_HOME": str(tmp_path / "home"),
        "THREADLINE_GATEWAY_PORT": str(free_port()),
        "THREADLINE_WORKER_OPS_PORT": str(free_port()),
    }
    settings = secured_kafka.settings(env)
    assert settings.kafka.sasl_password is None and settings.kafka.sasl_password_file == password_file

    applied = cli(env, "topics", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "drift" not in text(applied)

    apps.start(settings, names=PIPELINE)
    pids = {name: process.managed(settings, name).pid() for name in PIPELINE}
    procs = [psutil.Process(pid) for pid in pids.values() if pid]
    procs += [c for p in procs for c in p.children(recursive=True)]
    try:
        assert all(pids.values()), f"a component did not start: {pids}"
        yield settings
    finally:
        stopped = apps.stop(settings)
        logs = {name: process.managed(settings, name).log_file for name in PIPELINE}
        assert sorted(stopped) == sorted(PIPELINE), f"a component had died before the end: {stopped}; logs: {logs}"
        left = [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"processes left running: {left}"


def wait_ready(settings, name: str, timeout: float) -> None:
    """Until the component's /readyz answers 200; a component that exits meanwhile fails at once,
    with the end of its log."""
    managed, base = process.managed(settings, name), apps.url(settings, name)
    deadline, detail = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if not managed.running():
            tail = "\n".join(managed.log_file.read_text(errors="replace").splitlines()[-15:])
            raise AssertionError(f"the {name} exited before it was ready:\n{tail}")
        try:
            ready, detail = apps.readiness(base)
            if ready:
                return
        except httpx.HTTPError as exc:  # not listening yet
            detail = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"the {name} was not ready within {timeout:g} s: {detail}")


def test_a_contact_posted_to_the_gateway_is_resolved_and_stitched_by_the_worker_over_sasl_ssl(secured_pipeline):
    settings = secured_pipeline
    started = time.monotonic()
    worker_ops = apps.url(settings, "worker")
    gateway_url = apps.url(settings, "gateway")

    # Ready means its dependencies answer: Kafka over SASL_SSL (and the registry).
    wait_ready(settings, "worker", timeout=60)
    ready = httpx.get(f"{worker_ops}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["kafka"] == {"ok": True} and ready.json()["checks"]["streams"] == {"ok": True}
    gateway_ready = httpx.get(f"{gateway_url}/readyz", timeout=10)
    assert gateway_ready.status_code == 200 and gateway_ready.json()["checks"]["kafka"] == {"ok": True}

    handle = f"secured_{uuid.uuid4().hex[:8]}"
    posted = httpx.post(
        f"{gateway_url}/contacts",
        json=contact(f"tw-{handle}", handle, connector="api"),
        timeout=30,
        headers={"authorization": f"Bearer {apps.token(settings, 'contact_tokens', 'api')}"},
    )
    assert posted.status_code == 202, posted.text
    ack = posted.json()
    assert ack["topic"] == CONTACTS.name and ack["offset"] >= 0
    event_id = ack["event_id"]

    # Read back on the secured broker with kafka-python (Settings.kafka.client_config).
    resolved = Reader(settings, CONTACTS_RESOLVED.name)
    conversations = Reader(settings, CONVERSATIONS.name)
    try:
        [mine] = [
            v
            for v in resolved.wait_for(
                lambda vs: any(v["event_id"] == event_id for v in vs), timeout=60, what=f"contact {event_id}"
            )
            if v["event_id"] == event_id
        ]
        assert mine["customer_id"]
        assert mine["identities"][0]["value"] == handle and mine["text"] == "il mio ordine è arrivato rotto"
        [record] = [m for m, v in resolved.records if v["event_id"] == event_id]
        assert record.key == mine["customer_id"].encode()

        events = conversations.wait_for(
            lambda vs: any(v["contact_event_id"] == event_id for v in vs),
            timeout=30,
            what=f"the conversation of {event_id}",
        )
        ours = [v for v in events if v["contact_event_id"] == event_id]
        assert "opened" in {v["event_type"] for v in ours}
        assert {v["customer_id"] for v in ours} == {mine["customer_id"]}
        assert ours[0]["channel"] == "twitter"
    finally:
        resolved.close()
        conversations.close()

    # The worker counted what it consumed on each of its topics.
    def counted() -> bool:
        samples = scrape(worker_ops)
        return all(
            total(samples, "threadline_events_consumed_total", component="worker", topic=t) >= 1
            for t in (CONTACTS.name, CONTACTS_RESOLVED.name)
        )

    wait_until(counted, 10, interval=0.5, what="the worker's consumed-events metrics")
    samples = scrape(worker_ops)
    assert total(samples, "threadline_events_produced_total", component="worker", topic=CONVERSATIONS.name) >= 1
    assert total(samples, "threadline_ready", component="worker", dependency="kafka") == 1
    assert total(scrape(gateway_url), "threadline_events_produced_total", component="gateway", topic=CONTACTS.name) >= 1

    # The worker's consumer groups are on the secured broker, each with the worker as its member,
    # and each committed the contact's offset on its topic (what `threadline groups` reports): the
    # route stage's group on contacts.v1, faust's (the conversations stage) on contacts.resolved.v1.
    def committed(group_id: str, topic: str) -> GroupLag | None:
        [group] = group_lags(settings, groups=[group_id])
        lag = {t.topic: t for t in group.topics}.get(topic)
        return group if lag and lag.end >= 1 and lag.lag == 0 else None

    for group_id, topic in ((route_group(APP_ID), CONTACTS.name), (APP_ID, CONTACTS_RESOLVED.name)):
        wait_until(
            lambda g=group_id, t=topic: committed(g, t), 20, interval=0.5, what=f"the commit of {group_id} on {topic}"
        )
        group = committed(group_id, topic)
        assert group is not None and (group.state, group.members) == ("Stable", 1)
    print(f"\nsecured pipeline: contact posted, resolved and stitched in {time.monotonic() - started:.1f} s")
