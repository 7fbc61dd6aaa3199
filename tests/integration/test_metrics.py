"""Metrics and probes of every component, each a real process on the real broker.

* The gateway, the stream worker, the projector and the read API run on topics and projection
  schemas of this test's own; /metrics is scraped before and after signed chat webhooks go
  through, and what each component counts must have moved by what was sent.
* Readiness follows PostgreSQL: the read API and a projector point at a private embedded
  PostgreSQL (the shared one stays up for the other tests); stopping it turns /readyz to 503
  naming postgres, starting it again turns it back to 200.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent / "streams"))

from stream_helpers import create_topics, delete_topics, start_worker, wait_for_members  # noqa: E402
from streams.app import StreamTopics  # noqa: E402
from fixtures.tokens import API_TOKENS, bearer, token_env  # noqa: E402
from threadline.process import free_port, terminate_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONTACTS_SENT = 12


class Proc:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc, self.log_path = proc, log_path

    @classmethod
    def start(cls, argv: list[str], env: dict, log_path: Path) -> Proc:
        return cls(
            subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=log_path.open("ab"),
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            ),
            log_path,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            terminate_tree(self.proc.pid, timeout=30)
        self.proc.wait(10)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "threadline.tools.cli", *args]


def gateway_argv(contacts: str, dlq: str) -> list[str]:
    """The gateway on this test's topics (``threadline serve gateway`` writes the catalog's)."""
    code = (
        "import uvicorn; from connectors.gateway import create_app; from schemas.codec import make_codec; "
        "from threadline.settings import Settings; "
        "from threadline.logging import configure_logging; s = Settings(); configure_logging(s); "
        "app = create_app(s, codec_factory=lambda: make_codec(s), "
        f"contacts_topic={contacts!r}, dlq_topic={dlq!r}); "
        "uvicorn.run(app, host='127.0.0.1', port=s.endpoints.gateway_port, log_config=None, access_log=False)"
    )
    return [sys.executable, "-c", code]


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page, by name and labels."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def series(samples: dict, name: str, **labels: str) -> list[dict]:
    want = set(labels.items())
    return [dict(ls) for (n, ls), _ in samples.items() if n == name and want <= ls]


def wait_for(condition, what: str, procs: list[Proc], timeout: float = 120.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.log_path.name}: the process exited; see {p.log_path}"
        try:
            last = condition()
            if last:
                return last
        except httpx.HTTPError as exc:  # not listening yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")


def ready(base: str) -> bool:
    return httpx.get(f"{base}/readyz", timeout=10).status_code == 200


def chat_body(run: str, i: int) -> bytes:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30) + timedelta(seconds=i)
    return json.dumps(
        {
            "message_id": f"{run}-{i}",
            "session_id": f"{run}-s{i % 3}",
            "visitor_id": f"{run}-v{i % 3}",
            "sent_at": at.isoformat(),
            "sender": "visitor",
            # no run id here: one starting with four digits read as an order number shared by every
            # contact, which merged the three customers (a re-keyed contact: 13 resolved records)
            "text": f"My order {i} arrived broken",
            "login": {"email": f"metrics-{run}-{i % 3}@example.it"},
        }
    ).encode()


@pytest.fixture
def pipeline(services, tmp_path):
    """Gateway, worker, projector (support) and read API on this test's topics and schemas."""
    from threadline.topics import admin_client

    run = uuid.uuid4().hex[:8]
    prefix = f"metrics{run}"
    topics = StreamTopics.prefixed(prefix)
    ingest_dlq = f"{prefix}.ingest.dlq.v1"
    admin = admin_client(services.settings)
    names = create_topics(admin, topics)
    admin.create_topics({ingest_dlq: {"num_partitions": 1, "replication_factor": 1}})
    names.append(ingest_dlq)
    projection_prefix = f"m{run}_"
    secret = uuid.uuid4().hex
    ports = {name: free_port() for name in ("gateway", "worker", "projector", "api")}
    env = {
        **services.env(),
        "THREADLINE_PROJECTION_PREFIX": projection_prefix,
        "THREADLINE_LOG_LEVEL": "INFO",
        "THREADLINE_GATEWAY_PORT": str(ports["gateway"]),
        "THREADLINE_API_PORT": str(ports["api"]),
        "THREADLINE_PROJECTOR_OPS_PORT": str(ports["projector"]),
        "THREADLINE_WEBHOOK_SECRET": secret,
        **token_env(),
    }
    procs: list[Proc] = []
    try:
        procs.append(Proc.start(gateway_argv(topics.contacts, ingest_dlq), env, tmp_path / "gateway.log"))
        worker = start_worker(
            services,
            app_id=f"metrics-{run}",
            prefix=prefix,
            home=tmp_path / "worker-home",
            log_path=tmp_path / "worker.log",
            THREADLINE_WORKER_OPS_PORT=str(ports["worker"]),
        )
        procs.append(Proc(worker.proc, worker.log_path))
        procs.append(
            Proc.start(
                cli(
                    "project",
                    "-p",
                    "support",
                    "--no-contacts",
                    "--contacts-topic",
                    topics.resolved,
                    "--conversations-topic",
                    topics.conversations,
                    "--identities-topic",
                    topics.identities,
                ),
                env,
                tmp_path / "projector.log",
            )
        )
        procs.append(Proc.start(cli("serve", "api"), env, tmp_path / "api.log"))
        bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        wait_for_members(admin, f"metrics-{run}", 1)
        for name, base in bases.items():
            wait_for(lambda base=base: ready(base), f"{name} ready", procs)
        yield {
            "bases": bases,
            "topics": topics,
            "secret": secret,
            "run": run,
            "procs": procs,
            "projector": f"projector:{projection_prefix}support",
        }
    finally:
        for p in procs:
            p.stop()
        delete_topics(admin, names)
        admin.close()
        with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "select nspname from pg_namespace where nspname like %s", (projection_prefix + "%",)
            ).fetchall():
                conn.execute(f"drop schema {schema} cascade")
            conn.execute("delete from projection_offsets where projector like %s", (projection_prefix + "%",))


def test_each_component_counts_the_traffic_that_went_through_it(pipeline):
    from connectors.signatures import signed_headers

    bases, topics, procs = pipeline["bases"], pipeline["topics"], pipeline["procs"]
    for base in bases.values():
        assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
    before = {name: scrape(base) for name, base in bases.items()}

    url = f"{bases['gateway']}/webhooks/chat"
    with httpx.Client(timeout=30) as http:
        for i in range(CONTACTS_SENT):
            body = chat_body(pipeline["run"], i)
            r = http.post(url, content=body, headers=signed_headers("chat", body, url, pipeline["secret"]))
            assert r.status_code == 202, r.text
        body = chat_body(pipeline["run"], 999)
        bad = signed_headers("chat", body, url, "not-the-secret")
        assert http.post(url, content=body, headers=bad).status_code == 401

    projector = pipeline["projector"]
    after = {}

    def projected():
        # a batch's records are counted when consumed, its latency once it is written: both
        after["projector"] = scrape(bases["projector"])
        return (
            total(after["projector"], "threadline_events_consumed_total", component=projector, topic=topics.resolved)
            >= CONTACTS_SENT
            and total(after["projector"], "threadline_processing_seconds_count", component=projector, stage="batch")
            >= 1
        )

    wait_for(projected, "the projector consumed every resolved contact", procs)
    with httpx.Client(base_url=bases["api"], timeout=30, headers=bearer(API_TOKENS["support"])) as api:
        found = api.get(
            "/customers/by-identity", params={"kind": "email", "value": f"metrics-{pipeline['run']}-0@example.it"}
        )
        assert found.status_code == 200, found.text
        customer = found.json()["customer_id"]
        assert api.get(f"/customers/{customer}/timeline").status_code == 200
        assert api.get("/customers/no-such-customer/timeline").status_code == 404

    # The worker's lag is updated every 5 s: wait for its series rather than sleep.
    wait_for(
        lambda: series(scrape(bases["worker"]), "threadline_consumer_lag", component="worker", topic=topics.contacts),
        "the worker's lag gauge",
        procs,
        timeout=30,
    )
    after.update({name: scrape(base) for name, base in bases.items() if name != "projector"})
    moved = lambda name, metric, **labels: (
        total(after[name], metric, **labels)  # noqa: E731
        - total(before[name], metric, **labels)
    )

    # gateway: requests by route template, contacts by connector and outcome, events produced
    assert (
        moved("gateway", "threadline_http_requests_total", app="gateway", route="/webhooks/{connector}", status="202")
        == CONTACTS_SENT
    )
    assert (
        moved("gateway", "threadline_http_requests_total", app="gateway", route="/webhooks/{connector}", status="401")
        == 1
    )
    assert (
        moved("gateway", "threadline_http_request_seconds_count", app="gateway", route="/webhooks/{connector}")
        == CONTACTS_SENT + 1
    )
    assert moved("gateway", "threadline_gateway_contacts_total", connector="chat", outcome="accepted") == CONTACTS_SENT
    assert moved("gateway", "threadline_gateway_contacts_total", connector="chat", outcome="rejected") == 1
    assert (
        moved("gateway", "threadline_events_produced_total", component="gateway", topic=topics.contacts)
        == CONTACTS_SENT
    )

    # worker: consumed and produced per topic, per-record latency, SLA clocks started
    assert (
        moved("worker", "threadline_events_consumed_total", component="worker", topic=topics.contacts) == CONTACTS_SENT
    )
    assert moved("worker", "threadline_events_consumed_total", component="worker", topic=topics.graph) == CONTACTS_SENT
    assert (
        moved("worker", "threadline_events_produced_total", component="worker", topic=topics.resolved) == CONTACTS_SENT
    )
    assert moved("worker", "threadline_events_produced_total", component="worker", topic=topics.conversations) > 0
    assert moved("worker", "threadline_processing_seconds_count", component="worker", stage="route") == CONTACTS_SENT
    assert moved("worker", "threadline_processing_seconds_count", component="worker", stage="conversations") > 0
    assert moved("worker", "threadline_sla_total", event="started", channel="chat") >= 3  # one per customer
    assert moved("worker", "threadline_dlq_total") == 0
    lag = series(after["worker"], "threadline_consumer_lag", component="worker", topic=topics.contacts)
    assert {s["partition"] for s in lag} <= {str(p) for p in range(6)} and lag

    # projector: consumed per topic, per-batch latency, lag per partition of each source topic
    assert (
        moved("projector", "threadline_events_consumed_total", component=projector, topic=topics.resolved)
        == CONTACTS_SENT
    )
    assert moved("projector", "threadline_events_consumed_total", component=projector, topic=topics.conversations) > 0
    assert moved("projector", "threadline_processing_seconds_count", component=projector, stage="batch") >= 1
    assert {
        (s["topic"], s["partition"]) for s in series(after["projector"], "threadline_consumer_lag", component=projector)
    } >= {(topics.resolved, str(p)) for p in range(6)}

    # api: requests by route template, never the raw path
    assert moved("api", "threadline_http_requests_total", app="api", route="/customers/by-identity", status="200") == 1
    assert (
        moved(
            "api", "threadline_http_requests_total", app="api", route="/customers/{customer_id}/timeline", status="200"
        )
        == 1
    )
    assert (
        moved(
            "api", "threadline_http_requests_total", app="api", route="/customers/{customer_id}/timeline", status="404"
        )
        == 1
    )
    assert not [s for s in series(after["api"], "threadline_http_requests_total") if customer in s["route"]]

    # every component: ready, with each of its dependencies reported
    for name, deps in {
        "gateway": {"kafka", "registry"},
        "worker": {"kafka", "registry", "streams"},
        "projector": {"kafka", "registry", "postgres", "projectors"},
        "api": {"postgres"},
    }.items():
        body = httpx.get(f"{bases[name]}/readyz", timeout=10).json()
        assert body["status"] == "ready" and set(body["checks"]) == deps, (name, body)
        assert {s["dependency"] for s in series(scrape(bases[name]), "threadline_ready", component=name)} == deps


# -- readiness follows PostgreSQL ---------------------------------------------------------------
@pytest.fixture
def private_postgres(services):
    """An embedded PostgreSQL of this test's own (state folder and port), stopped and removed after."""
    from threadline.tools.stack import postgres

    home = services.settings.state_dir / "test-pg" / uuid.uuid4().hex[:8]
    settings = services.settings.model_copy(update={"home": home, "pg_port": free_port(), "pg_dsn": None})
    postgres.start(settings)
    try:
        yield settings
    finally:
        postgres.stop(settings)
        shutil.rmtree(home, ignore_errors=True)


def test_readiness_turns_503_naming_postgres_while_it_is_down_and_200_when_it_is_back(
    services, private_postgres, tmp_path
):
    from threadline.tools.stack import postgres
    from threadline.topics import admin_client

    run = uuid.uuid4().hex[:8]
    sources = [f"test.ready.{run}.{n}" for n in ("contacts", "conversations", "identities")]
    admin = admin_client(services.settings)
    admin.create_topics({t: {"num_partitions": 1, "replication_factor": 1} for t in sources})
    ports = {"api": free_port(), "projector": free_port()}
    env = {
        **services.env(),
        "THREADLINE_PG_DSN": private_postgres.effective_pg_dsn,
        "THREADLINE_PG_API_DSN": private_postgres.effective_pg_api_dsn,
        "THREADLINE_API_PORT": str(ports["api"]),
        "THREADLINE_PROJECTOR_OPS_PORT": str(ports["projector"]),
    }
    procs = [
        Proc.start(cli("serve", "api"), env, tmp_path / "api.log"),
        Proc.start(
            cli(
                "project",
                "-p",
                "support",
                "--no-contacts",
                "--contacts-topic",
                sources[0],
                "--conversations-topic",
                sources[1],
                "--identities-topic",
                sources[2],
            ),
            env,
            tmp_path / "projector.log",
        ),
    ]
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name, base in bases.items():
            wait_for(lambda base=base: ready(base), f"{name} ready", procs)

        postgres.stop(private_postgres)
        for name, base in bases.items():
            answer = wait_for(
                lambda base=base: (r := httpx.get(f"{base}/readyz", timeout=10)).status_code == 503 and r,
                f"{name} not ready without postgres",
                procs,
                timeout=60,
            )
            body = answer.json()
            assert body["failing"] == ["postgres"], (name, body)
            assert body["checks"]["postgres"]["ok"] is False and body["checks"]["postgres"]["detail"]
            assert httpx.get(f"{base}/livez", timeout=10).status_code == 200  # alive, only not ready
            metrics_text = httpx.get(f"{base}/metrics", timeout=10).text
            gauge = {
                s.labels["dependency"]: s.value
                for f in text_string_to_metric_families(metrics_text)
                for s in f.samples
                if s.name == "threadline_ready"
            }
            assert gauge["postgres"] == 0 and all(v == 1 for k, v in gauge.items() if k != "postgres"), gauge

        postgres.start(private_postgres)
        for name, base in bases.items():
            wait_for(lambda base=base: ready(base), f"{name} ready again with postgres back", procs, timeout=90)
            assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"
    finally:
        for p in procs:
            p.stop()
        admin.delete_topics(sources)
        admin.close()
