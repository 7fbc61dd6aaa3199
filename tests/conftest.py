"""Session fixtures: real Kafka, PostgreSQL and schema registry for integration and e2e tests.

Where they come from, in order:
  1. addresses from the environment (THREADLINE_KAFKA_BOOTSTRAP, THREADLINE_PG_DSN,
     THREADLINE_REGISTRY_URL; all three, or the ones given plus the local stack for the rest
     is not supported: give all three);
  2. testcontainers, when a Docker engine answers;
  3. the local stack (``threadline up``), started by the fixture and stopped at the end if the
     fixture started it.
Unit tests use none of this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from threadline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ENV_KEYS = ("THREADLINE_KAFKA_BOOTSTRAP", "THREADLINE_PG_DSN", "THREADLINE_REGISTRY_URL")


@dataclass(frozen=True)
class Services:
    settings: Settings
    source: str  # environment | testcontainers | local-stack
    broker_version: str

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (workers, servers) that must use the same services."""
        s = self.settings
        return {
            "THREADLINE_HOME": str(s.state_dir),
            "THREADLINE_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "THREADLINE_PG_DSN": s.effective_pg_dsn,
            "THREADLINE_PG_API_DSN": s.effective_pg_api_dsn,
            "THREADLINE_PG_KEYSTORE_DSN": s.effective_keystore_dsn,
            "THREADLINE_REGISTRY_URL": s.registry.url,
            "THREADLINE_CODEC": s.registry.codec.value,
            "THREADLINE_LOG_FORMAT": "json",
            # Tests start several workers and projectors at once: none serves /metrics unless a
            # test gives it a port of its own.
            "THREADLINE_WORKER_OPS_PORT": "0",
            "THREADLINE_PROJECTOR_OPS_PORT": "0",
        }


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def _mode() -> str:
    if all(os.environ.get(k) for k in ENV_KEYS):
        return "environment"
    if os.environ.get("THREADLINE_TEST_NO_DOCKER") != "1" and _docker_answers():
        return "testcontainers"
    return "local-stack"


# The folder under tests/ a test lives in, and the marker that folder gives it.
FOLDER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e, "deploy": pytest.mark.deploy}


def pytest_collection_modifyitems(config, items):
    """tests/integration, tests/e2e and tests/deploy are marked by where they live, so `-m` can
    pick them (or leave them out)."""
    tests = REPO / "tests"
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if not path.is_relative_to(tests):
            continue
        folder = path.relative_to(tests).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


def pytest_report_header(config):
    mode = _mode()
    if mode == "local-stack":
        s = Settings()
        return [
            f"threadline services: local stack in {s.state_dir}",
            f"kafka broker: Apache Kafka {s.stack.kafka_version} (KRaft, single node, Java 17)",
        ]
    return [f"threadline services: {mode}"]


@pytest.fixture(scope="session")
def services(request) -> Services:
    mode = _mode()
    if mode == "environment":
        s = Settings()
        yield Services(s, mode, "from the environment")
        return
    if mode == "testcontainers":
        yield from _testcontainers()
        return
    from threadline.tools import stack
    from threadline.tools.stack import kafka_broker

    s = Settings()
    was_running = kafka_broker.managed(s).running()
    try:
        started = stack.up(s, log=lambda m: None)
    except BaseException:
        if not was_running:
            stack.down(s)  # a part failed to start: stop the parts that did, leave nothing behind
        raise
    version = kafka_broker.broker_version(s) or s.stack.kafka_version
    print(f"\nkafka broker: Apache Kafka {version} at {s.kafka.bootstrap}")
    # The embedded server's generated passwords live in the state folder: named as files here, so
    # tests that give their components a state folder of their own (model_copy(home=...)) still
    # reach the same server with them.
    s.effective_pg_dsn, s.effective_pg_api_dsn, s.effective_keystore_dsn  # made on first use
    secrets = s.state_dir / "secrets"
    explicit = s.model_copy(
        update={
            "pg_password_file": secrets / "postgres-threadline",
            "pg_api_password_file": secrets / "postgres-threadline_reader",
            "pg_keystore_password_file": secrets / "postgres-threadline_keystore",
        }
    )
    try:
        yield Services(explicit, mode, version)
    finally:
        if any(started.values()) and os.environ.get("THREADLINE_TEST_KEEP_STACK") != "1":
            stack.down(s)


def _testcontainers():
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka_c,
        PostgresContainer("postgres:16", driver=None) as pg_c,
        DockerContainer("apicurio/apicurio-registry:3.0.9").with_exposed_ports(8080) as reg_c,
    ):
        wait_for_logs(reg_c, "Installed features", timeout=120)
        registry = f"http://{reg_c.get_container_host_ip()}:{reg_c.get_exposed_port(8080)}/apis/ccompat/v7"
        home = REPO / ".threadline" / "testcontainers"
        os.environ.update(
            {
                "THREADLINE_KAFKA_BOOTSTRAP": kafka_c.get_bootstrap_server(),
                "THREADLINE_PG_DSN": pg_c.get_connection_url(),
                "THREADLINE_REGISTRY_URL": registry,
                "THREADLINE_HOME": str(home),
            }
        )
        yield Services(Settings(), "testcontainers", "cp-kafka 7.6.1")


@pytest.fixture(scope="session")
def settings(services) -> Settings:
    return services.settings


@pytest.fixture(scope="session")
def catalog_topics(settings):
    """The topic catalog applied to the cluster (idempotent)."""
    from threadline.topics import apply

    return apply(settings)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def admin(settings):
    from threadline.topics import admin_client

    client = admin_client(settings)
    yield client
    client.close()


@pytest.fixture
def new_topic(admin, unique):
    """Create throw-away topics (deleted afterwards): new_topic(partitions=3, **configs) -> name."""
    created = []

    def make(partitions: int = 1, name: str | None = None, **configs) -> str:
        topic = name or f"test.{unique}.{len(created)}"
        admin.create_topics(
            {
                topic: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": {k.replace("_", "."): v for k, v in configs.items()},
                }
            }
        )
        created.append(topic)
        return topic

    yield make
    if created:
        try:
            admin.delete_topics(created)
        except Exception:  # cleanup of throw-away topics must not fail the test that used them
            pass
