"""deploy/compose: the compose file as Docker Compose itself reads it, and the demo's external mode.

There is no Docker engine here, but ``docker compose config`` needs none: it parses, interpolates,
validates against the compose specification and prints the resolved model. The compose CLI is
built once from the Go module proxy (deploy/compose/tools/build-compose.sh, into
.threadline/tools/docker/cli-plugins) and runs as a docker CLI plugin, so the test runs
literally ``docker compose config``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from connectors.table import SECRET_NAMES
from threadline.secrets import secret
from threadline.errors import ConfigError
from threadline.settings import PG_KEYSTORE, PG_OWNER, PG_READER, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
BUILD_SCRIPT = COMPOSE_DIR / "tools" / "build-compose.sh"
COMPOSE_VERSION = "2.40.3"
THREADLINE = REPO / ".venv" / "bin" / "threadline"
if not THREADLINE.exists():  # a venv elsewhere: the console script beside this interpreter
    THREADLINE = Path(sys.executable).with_name("threadline")

ONE_SHOTS = {"secrets", "topics", "demo"}
# Privacy on (docs/privacy.md): who seals (the gateway: contacts and ingest.dlq.v1; the worker:
# streams.dlq.v1) reaches the key store as its own role; who opens (the projector) as the owner.
PRIVACY_KEYS = ("privacy_master_key", "privacy_pseudonym_key")
KEYSTORE_USERS = {"gateway", "worker", "identity"}
PRIVACY_COMPONENTS = KEYSTORE_USERS | {"projector"}
COMPONENTS = {"gateway", "worker", "identity", "projector", "api"}
INFRA = {"kafka", "postgres", "registry"}
# The image's state folder (deploy/docker/Dockerfile: THREADLINE_HOME).
IMAGE_HOME = Path("/var/lib/threadline")

# A cold build (empty Go module and build caches) took about 1 min 45 s on 2 cores.
BUILD_TIMEOUT = 1500
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT)


@dataclass(frozen=True)
class Compose:
    argv: tuple[str, ...]
    env: dict[str, str]
    empty_env_file: Path

    def run(self, *args: str, file: Path = COMPOSE_FILE, env_file: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [*self.argv, "--env-file", str(env_file or self.empty_env_file), "-f", str(file), *args]
        return subprocess.run(cmd, cwd=file.parent, env=self.env, capture_output=True, text=True, timeout=120)

    def model(self, *args: str, env_file: Path | None = None) -> dict:
        r = self.run(*args, "config", "--format", "json", env_file=env_file)
        assert r.returncode == 0, f"docker compose config failed:\n{r.stderr}"
        return json.loads(r.stdout)


@pytest.fixture(scope="session")
def compose(tmp_path_factory) -> Compose:
    """The compose CLI, built once into the repository's state folder and reused after that."""
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], env={**os.environ, "THREADLINE_HOME": str(REPO / ".threadline")},
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, f"building docker compose failed:\n{built.stderr[-4000:]}"
    binary = Path(built.stdout.strip().splitlines()[-1])
    assert binary.is_file() and os.access(binary, os.X_OK)
    tmp = tmp_path_factory.mktemp("compose")
    empty = tmp / "empty.env"
    empty.write_text("")
    # A clean environment: the shell's variables must not leak into the interpolation.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "DOCKER_CONFIG": str(binary.parent.parent)}
    argv = ("docker", "compose") if shutil.which("docker") else (str(binary),)
    version = subprocess.run([*argv, "version", "--short"], env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().lstrip("v") == COMPOSE_VERSION
    return Compose(argv, env, empty)


@pytest.fixture(scope="session")
def model(compose) -> dict:
    return compose.model("--profile", "demo")


def test_compose_config_accepts_the_file_and_rejects_a_broken_copy(compose, tmp_path):
    text = COMPOSE_FILE.read_text()
    good = tmp_path / "compose.yaml"
    good.write_text(text)
    assert compose.run("config", "--quiet", file=good).returncode == 0

    # A component waiting for a service that does not exist.
    dangling = tmp_path / "dangling" / "compose.yaml"
    dangling.parent.mkdir()
    dangling.write_text(text.replace("  topics:\n    condition: service_completed_successfully",
                                     "  topic:\n    condition: service_completed_successfully", 1))
    assert dangling.read_text() != text
    r = compose.run("config", "--quiet", file=dangling)
    assert r.returncode != 0
    assert "topic" in r.stderr and "undefined" in r.stderr, r.stderr

    # A misspelt health check key: the compose specification has no `intervall`.
    typo = tmp_path / "typo" / "compose.yaml"
    typo.parent.mkdir()
    typo.write_text(text.replace("      interval: 10s\n", "      intervall: 10s\n", 1))
    r = compose.run("config", "--quiet", file=typo)
    assert r.returncode != 0
    assert "intervall" in r.stderr, r.stderr


def test_services_and_profiles(compose, model):
    assert set(model["services"]) == INFRA | COMPONENTS | ONE_SHOTS
    assert model["name"] == "threadline"
    # Without the demo profile, `docker compose up` runs the system but does not tell the story.
    assert set(compose.model()["services"]) == INFRA | COMPONENTS | (ONE_SHOTS - {"demo"})
    assert model["services"]["demo"]["profiles"] == ["demo"]


def test_every_long_running_service_has_a_health_check_and_one_shots_do_not_restart(model):
    for name, svc in model["services"].items():
        if name in ONE_SHOTS:
            assert svc["restart"] == "no", name
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert svc["restart"] == "unless-stopped", name


def test_images_match_the_local_stack(model):
    settings = Settings()
    svc = model["services"]
    assert svc["kafka"]["image"] == f"apache/kafka:{settings.stack.kafka_version}"
    assert svc["registry"]["image"] == "apicurio/apicurio-registry:3.0.9"
    assert svc["postgres"]["image"] == "postgres:16"
    for name in COMPONENTS | ONE_SHOTS:
        assert svc[name]["image"] == "threadline:latest", name
        assert svc[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile", name
        assert Path(svc[name]["build"]["context"]) == REPO, name
        assert (REPO / svc[name]["build"]["dockerfile"]).is_file()


def test_kafka_is_a_single_kraft_node_the_components_reach(model):
    kafka = model["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # A KRaft cluster id is a UUID in URL-safe base64 without padding: 22 characters, 16 bytes.
    assert len(env["CLUSTER_ID"]) == 22 and len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    advertised = dict(a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(advertised) | {"CONTROLLER"} == set(protocols)
    for name in COMPONENTS | {"topics", "demo"}:
        bootstrap = model["services"][name]["environment"]["THREADLINE_KAFKA_BOOTSTRAP"]
        assert bootstrap == advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]], name
        assert model["services"][name]["environment"]["THREADLINE_REPLICATION_FACTOR"] == env["KAFKA_DEFAULT_REPLICATION_FACTOR"]
    # The host's listener is published on the port it advertises.
    host_port = advertised["HOST"].rsplit(":", 1)[1]
    assert any(p["published"] == host_port and p["target"] == 19092 for p in kafka["ports"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(kafka["healthcheck"]["test"])


def test_registry_and_postgres_are_wired_to_each_other_and_to_the_components(model):
    svc = model["services"]
    pg_env = svc["postgres"]["environment"]
    reg_env = svc["registry"]["environment"]
    assert reg_env["APICURIO_STORAGE_KIND"] == "sql" and reg_env["APICURIO_STORAGE_SQL_KIND"] == "postgresql"
    assert reg_env["APICURIO_DATASOURCE_URL"] == "jdbc:postgresql://postgres:5432/registry"
    assert reg_env["APICURIO_DATASOURCE_USERNAME"] == pg_env["POSTGRES_USER"]  # the superuser, not Threadline's
    # The registry's database is made by the postgres image's init scripts on the first start.
    init = {c["source"]: c["target"] for c in svc["postgres"]["configs"]}
    assert init["registry-database"].startswith("/docker-entrypoint-initdb.d/") and init["registry-database"].endswith(".sql")
    assert f'CREATE DATABASE registry OWNER "{pg_env["POSTGRES_USER"]}"' in model["configs"]["registry-database"]["content"]
    registry_check = " ".join(svc["registry"]["healthcheck"]["test"])
    assert "curl -fsS -o /dev/null http://localhost:8080/health/ready ||" in registry_check
    assert r"GET /health/ready HTTP/1.0\r\n\r\n" in registry_check
    assert "pg_isready -h 127.0.0.1" in " ".join(svc["postgres"]["healthcheck"]["test"])
    ccompat = Settings().registry.url.split("/", 3)[3]  # apis/ccompat/v7, as the local stack
    for name in COMPONENTS | {"topics", "demo"}:
        assert svc[name]["environment"]["THREADLINE_REGISTRY_URL"] == f"http://registry:8080/{ccompat}", name


def _dsn(url: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(url)


def test_each_component_connects_to_postgres_with_its_own_role_and_none_as_the_superuser(model):
    """docs/operations.md, "Database roles": the projector (and its migrations) as the database's
    owner, no superuser; the read API as the role that can only read; nobody else connects."""
    svc = model["services"]
    pg_env = svc["postgres"]["environment"]
    superuser = pg_env["POSTGRES_USER"]
    owner, reader = pg_env["DB_OWNER"], pg_env["DB_READER"]
    assert len({superuser, owner, reader}) == 3
    assert (owner, reader) == (PG_OWNER, PG_READER), "the local stack's role names"

    projector = svc["projector"]["environment"]
    assert _dsn(projector["THREADLINE_PG_DSN"]) == {"user": owner, "password": pg_env["DB_OWNER_PASSWORD"],
                                                     "host": "postgres", "port": "5432", "dbname": pg_env["POSTGRES_DB"]}
    assert "THREADLINE_PG_API_DSN" not in projector

    api = svc["api"]["environment"]
    assert _dsn(api["THREADLINE_PG_API_DSN"]) == {"user": reader, "password": pg_env["DB_READER_PASSWORD"],
                                                   "host": "postgres", "port": "5432", "dbname": pg_env["POSTGRES_DB"]}
    assert "THREADLINE_PG_DSN" not in api, "the read API holds no credential that can write"
    # The read API's settings resolve to the reader's DSN, as the code reads them.
    settings = Settings(**{k.removeprefix("THREADLINE_").lower(): v for k, v in api.items() if k.startswith("THREADLINE_")})
    assert _dsn(settings.effective_pg_api_dsn)["user"] == reader

    for name in (COMPONENTS | ONE_SHOTS) - {"projector", "api"}:
        env = svc[name]["environment"]
        assert not {"THREADLINE_PG_DSN", "THREADLINE_PG_API_DSN"} & set(env), name
    for name in (COMPONENTS | ONE_SHOTS) - KEYSTORE_USERS:
        assert "THREADLINE_PG_KEYSTORE_DSN" not in svc[name]["environment"], name
    for name, s in svc.items():
        dsns = [_dsn(v) for v in (s.get("environment") or {}).values() if str(v).startswith("postgresql://")]
        assert all(d["user"] != superuser for d in dsns), name


def test_the_postgres_init_scripts_make_the_roles(model):
    svc = model["services"]
    init = {c["source"]: c["target"] for c in svc["postgres"]["configs"]}
    assert init["threadline-roles"] == "/docker-entrypoint-initdb.d/20-threadline-roles.sh"
    assert sorted(init.values()) == list(init.values()), "the registry's database first, then the roles"
    script = (COMPOSE_DIR / "postgres" / "20-threadline-roles.sh")
    assert Path(model["configs"]["threadline-roles"]["file"]) == script
    text = script.read_text()
    # The k8s dev overlay's PostgreSQL runs the same script.
    assert (REPO / "deploy" / "k8s" / "overlays" / "dev" / "postgres-roles.sh").read_text() == text
    for statement in ('create role :"owner" login nosuperuser', 'create role :"reader" login nosuperuser',
                      'alter database :"db" owner to :"owner"',
                      'alter default privileges for role :"owner" grant usage on schemas to :"reader"',
                      'alter default privileges for role :"owner" grant select on tables to :"reader"'):
        assert statement in text, statement
    assert "ON_ERROR_STOP=1" in text and "|| exit 1" in text
    # Passwords reach psql as variables (:'owner_password'), never spliced into the SQL.
    assert "$DB_OWNER_PASSWORD" not in text.split("<<'SQL'")[1]
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def _local(env: dict, home: Path) -> Settings:
    """A component's settings as the code reads them, its files under ``home`` instead of the image's."""
    flat = {}
    for k, v in env.items():
        if k.startswith("THREADLINE_"):
            if k.endswith("_FILE") and str(v).startswith(str(IMAGE_HOME)):
                v = str(home / Path(v).relative_to(IMAGE_HOME))
            flat[k.removeprefix("THREADLINE_").lower()] = v
    return Settings(**flat)


def test_every_component_that_seals_or_opens_gets_the_privacy_keys_from_the_secrets_volume(model, tmp_path):
    """Privacy is on in compose: the gateway, the worker and the projector read the same master and
    pseudonym keys from files of the `secrets` volume (mounted read-only, written by the one-shot
    `secrets` before they start), never from a value in the environment; nobody else holds them."""
    from schemas.keystore import pseudonymizer_from, wrapper_from

    svc = model["services"]
    holders = {n for n, s in svc.items() if "THREADLINE_PRIVACY_MASTER_KEY_FILE" in (s.get("environment") or {})}
    assert holders == PRIVACY_COMPONENTS
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", svc["secrets"]["command"][0]], capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "THREADLINE_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    masters = set()
    for name in PRIVACY_COMPONENTS:
        env = svc[name]["environment"]
        assert not {"THREADLINE_PRIVACY_MASTER_KEY", "THREADLINE_PRIVACY_PSEUDONYM_KEY"} & set(env), name
        mounts = {v["target"]: v for v in svc[name].get("volumes", [])}
        for key in ("THREADLINE_PRIVACY_MASTER_KEY_FILE", "THREADLINE_PRIVACY_PSEUDONYM_KEY_FILE"):
            folder = str(Path(env[key]).parent)
            assert mounts[folder]["source"] == "secrets" and mounts[folder]["read_only"], (name, key)
        assert svc[name]["depends_on"]["secrets"]["condition"] == "service_completed_successfully", name
        settings = _local(env, home)
        wrapper = wrapper_from(settings)
        assert wrapper is not None, f"{name}: privacy is off"
        pseudonymizer_from(settings)  # 32 bytes, or ConfigError
        masters.add((env["THREADLINE_PRIVACY_MASTER_KEY_FILE"], env["THREADLINE_PRIVACY_PSEUDONYM_KEY_FILE"]))
        assert settings.privacy.master_key_file.read_text() == (home / "secrets" / "privacy_master_key").read_text()
    assert len(masters) == 1, "one master key: what the gateway seals the projector opens"
    # .env's keys are written as given, and kept
    given = base64.b64encode(os.urandom(32)).decode()
    r = subprocess.run([sys.executable, "-c", svc["secrets"]["command"][0]], capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "THREADLINE_HOME": str(home), "PRIVACY_MASTER_KEY": given})
    assert r.returncode == 0 and (home / "secrets" / "privacy_master_key").read_text() == given + "\n"


def test_the_sealing_components_reach_postgres_as_the_key_store_role_only(model):
    """The gateway and the worker reach PostgreSQL as the key store's role, the one the roles script
    lets use privacy.data_keys (SELECT, INSERT) and nothing else; the code's key store resolves to
    that role for them, and to the owner for the projector (which makes the table at start)."""
    from schemas.keystore import make_keyring, make_store

    svc = model["services"]
    pg_env = svc["postgres"]["environment"]
    keystore = pg_env["DB_KEYSTORE"]
    assert keystore == PG_KEYSTORE, "the local stack's role name"
    assert len({pg_env["POSTGRES_USER"], pg_env["DB_OWNER"], pg_env["DB_READER"], keystore}) == 4
    for name in KEYSTORE_USERS:
        env = svc[name]["environment"]
        assert _dsn(env["THREADLINE_PG_KEYSTORE_DSN"]) == {
            "user": keystore, "password": pg_env["DB_KEYSTORE_PASSWORD"], "host": "postgres", "port": "5432",
            "dbname": pg_env["POSTGRES_DB"]}, name
        settings = _local(env, Path("/nonexistent"))
        settings = settings.model_copy(update={"privacy_master_key": "A" * 43 + "=", "privacy_pseudonym_key": "B" * 43 + "="})
        ring = make_keyring(settings, cached=True)
        assert _dsn(getattr(ring, "ring", ring).dsn)["user"] == keystore, name
    projector = _local(svc["projector"]["environment"], Path("/nonexistent")).model_copy(
        update={"privacy_master_key": "A" * 43 + "=", "privacy_pseudonym_key": "B" * 43 + "="})
    assert _dsn(make_store(projector, owner=True).dsn)["user"] == pg_env["DB_OWNER"]
    # The roles script: the key store's role gets CONNECT, USAGE on schema privacy and SELECT, INSERT
    # on the tables the owner makes there; nothing else names it. The reader does not reach privacy.
    text = (COMPOSE_DIR / "postgres" / "20-threadline-roles.sh").read_text().split("<<'SQL'")[1]
    granted = sorted(line.strip() for line in text.splitlines() if ':"keystore"' in line)
    assert granted == sorted([
        "create role :\"keystore\" login nosuperuser nocreatedb nocreaterole noinherit password :'keystore_password';",
        'grant connect on database :"db" to :"keystore";',
        'grant usage on schema privacy to :"keystore";',
        'alter default privileges for role :"owner" in schema privacy grant select, insert on tables to :"keystore";',
    ])
    assert 'create schema privacy authorization :"owner";' in text
    assert 'revoke all on schema privacy from :"reader";' in text


def test_named_volumes_hold_the_data(model):
    assert {"kafka-data", "postgres-data", "secrets"} <= set(model["volumes"])

    def mounts(name):
        return {v["target"]: v for v in model["services"][name].get("volumes", [])}

    kafka = mounts("kafka")
    log_dirs = model["services"]["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert kafka[log_dirs]["type"] == "volume" and kafka[log_dirs]["source"] == "kafka-data"
    assert mounts("postgres")["/var/lib/postgresql/data"]["source"] == "postgres-data"
    secrets_dir = str(IMAGE_HOME / "secrets")
    assert mounts("secrets")[secrets_dir]["source"] == "secrets"
    assert not mounts("secrets")[secrets_dir].get("read_only")
    for reader in ("gateway", "demo"):
        assert mounts(reader)[secrets_dir]["source"] == "secrets" and mounts(reader)[secrets_dir]["read_only"], reader


@pytest.mark.parametrize("service", ["worker", "identity"])
def test_worker_scales_without_sharing_ports_or_state(model, service):
    worker = model["services"][service]
    assert "ports" not in worker and "container_name" not in worker
    # RocksDB tables live in each replica's own anonymous volume, at the faust state folder.
    faust_dir = str(Settings(home=IMAGE_HOME).state_dir / "faust")
    (state,) = [v for v in worker["volumes"] if v["target"] == faust_dir]
    assert state["type"] == "volume" and not state.get("source")


def test_the_workers_run_every_stage_once_the_identity_graph_in_a_service_of_its_own(model):
    """`--scale worker=N` scales routing and stitching; the identity graph (a single writer) is the
    `identity` service; together they run every stage of the worker once, in one app."""
    from streams.app import STAGES

    stages: dict[str, str] = {}
    for name, svc in model["services"].items():
        command = svc.get("command") or []
        if command[:1] == ["worker"]:
            assert command[1] == "--stages" and "--app-id" not in command, (name, command)
            for stage in command[2].split(","):
                assert stage not in stages, f"{stage} runs in {stages[stage]} and {name}"
                stages[stage] = name
    assert stages == {"route": "worker", "conversations": "worker", "identity": "identity"}
    assert set(stages) == set(STAGES)
    worker, identity = model["services"]["worker"], model["services"]["identity"]
    assert worker["environment"] == identity["environment"]


def test_published_ports_and_health_checks_use_the_components_ports(model):
    s = Settings()
    ports = {"gateway": s.endpoints.gateway_port, "api": s.endpoints.api_port, "worker": s.endpoints.worker_ops_port,
             "identity": s.endpoints.worker_ops_port, "projector": s.endpoints.projector_ops_port}
    for name, port in ports.items():
        test = " ".join(model["services"][name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in test, name
    for name in ("gateway", "api"):
        (published,) = model["services"][name]["ports"]
        assert published["target"] == ports[name] and published["published"] == str(ports[name])
        assert published["host_ip"] == "127.0.0.1", "published on the loopback unless BIND_ADDRESS says otherwise"
    for name in ("worker", "identity", "projector") + tuple(ONE_SHOTS):
        assert not model["services"][name].get("ports"), name


class _Probe(BaseHTTPRequestHandler):
    status = 200
    ready_path = "/readyz"

    def do_GET(self):  # noqa: N802
        self.send_response(self.status if self.path == self.ready_path else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def probe_server(status: int, ready_path: str = "/readyz"):
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Probe", (_Probe,), {"status": status, "ready_path": ready_path}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_component_health_checks_pass_only_on_a_ready_answer(model, status, healthy):
    with probe_server(status) as port:
        for name in COMPONENTS:
            test = model["services"][name]["healthcheck"]["test"]
            assert test[:3] == ["CMD", "python", "-c"], name
            code = re.sub(r"127\.0\.0\.1:\d+/", f"127.0.0.1:{port}/", test[3])
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
            assert (r.returncode == 0) is healthy, (name, r.stderr[-500:])


@pytest.mark.parametrize("with_curl", [True, False])
@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_registry_health_check_with_and_without_curl(model, tmp_path, with_curl, status, healthy):
    kind, script = model["services"]["registry"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    bash = shutil.which("bash")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("head", "grep", "printf") + (("curl",) if with_curl else ()):
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the registry's check here"
        (tools / tool).symlink_to(found)
    with probe_server(status, "/health/ready") as port:
        local = script.replace("localhost:8080", f"localhost:{port}").replace("127.0.0.1/8080", f"127.0.0.1/{port}")
        assert local != script
        r = subprocess.run([bash, "-c", local], env={"PATH": str(tools)}, capture_output=True, text=True, timeout=30)
    assert (r.returncode == 0) is healthy, r.stderr


def test_components_wait_for_the_topics_and_the_demo_for_healthy_components(model):
    svc = model["services"]
    assert svc["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in COMPONENTS:
        deps = svc[name]["depends_on"]
        assert deps["topics"]["condition"] == "service_completed_successfully", name
        assert deps["registry"]["condition"] == deps["postgres"]["condition"] == "service_healthy", name
    assert svc["gateway"]["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    assert svc["registry"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {n: d["condition"] for n, d in svc["demo"]["depends_on"].items()} == {n: "service_healthy" for n in COMPONENTS}


def test_every_command_is_a_threadline_command(model):
    for name, svc in model["services"].items():
        if name in INFRA or svc.get("entrypoint"):
            continue
        r = subprocess.run([str(THREADLINE), *svc["command"], "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{name}: threadline {' '.join(svc['command'])} --help → {r.returncode}\n{r.stderr}"
    assert model["services"]["demo"]["command"] == ["demo", "--external"]
    assert [s for s, v in model["services"].items() if v.get("entrypoint")] == ["secrets"]


def test_the_demo_talks_to_the_gateway_and_api_services(model):
    env = model["services"]["demo"]["environment"]
    settings = Settings(**{k.removeprefix("THREADLINE_").lower(): v for k, v in env.items() if k.startswith("THREADLINE_")})
    assert (settings.endpoints.gateway_host, settings.endpoints.gateway_port) == ("gateway", Settings().endpoints.gateway_port)
    assert (settings.endpoints.api_host, settings.endpoints.api_port) == ("api", Settings().endpoints.api_port)


def test_the_secrets_service_writes_what_the_gateway_and_the_demo_read(model, tmp_path):
    svc = model["services"]
    script = svc["secrets"]["command"]
    assert svc["secrets"]["entrypoint"] == ["python", "-c"] and len(script) == 1
    assert set(svc["secrets"]["environment"]) == {n.upper() for n in SECRET_NAMES} | {"CONTACT_TOKENS", "API_TOKENS"} | {
        n.upper() for n in PRIVACY_KEYS}
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "THREADLINE_HOME": str(home), "WEBHOOK_SECRET": "from-dot-env",
           "TWILIO_AUTH_TOKEN": ""}
    first = subprocess.run([sys.executable, "-c", script[0]], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    files = {p.name: p for p in (home / "secrets").iterdir()}
    assert set(files) == set(SECRET_NAMES) | {"contact_tokens", "api_tokens"} | set(PRIVACY_KEYS)
    assert files["webhook_secret"].read_text() == "from-dot-env\n"
    assert re.fullmatch(r"[0-9a-f]{48}\n", files["twilio_auth_token"].read_text())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    # A second start keeps the generated ones (the gateway's providers were given them).
    generated = files["meta_app_secret"].read_text()
    second = subprocess.run([sys.executable, "-c", script[0]], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and files["meta_app_secret"].read_text() == generated

    # The gateway and the demo find every signing secret through their *_FILE settings, and the
    # gateway, the api and the demo their token tables.
    from threadline import auth

    tokens = {"gateway": {"THREADLINE_CONTACT_TOKENS_FILE"}, "demo": {"THREADLINE_API_TOKENS_FILE"}}
    for reader in ("gateway", "demo"):
        file_env = {k: v for k, v in svc[reader]["environment"].items()
                    if k.endswith("_FILE") and k not in tokens[reader] and not k.startswith("THREADLINE_PRIVACY_")}
        assert set(file_env) == {f"THREADLINE_{n.upper()}_FILE" for n in SECRET_NAMES}, reader
        assert tokens[reader] <= set(svc[reader]["environment"]), reader
        local = {k.removeprefix("THREADLINE_").lower(): str(home / Path(v).relative_to(IMAGE_HOME)) for k, v in file_env.items()}
        settings = Settings(**local)
        assert {n: secret(settings.connectors, n) for n in SECRET_NAMES} == {n: files[n].read_text().strip() for n in SECRET_NAMES}
    for reader, table in (("gateway", "contact_tokens"), ("api", "api_tokens"), ("demo", "api_tokens")):
        path = svc[reader]["environment"][f"THREADLINE_{table.upper()}_FILE"]
        settings = Settings(**{f"{table}_file": str(home / Path(path).relative_to(IMAGE_HOME))})
        loaded = getattr(auth, table)(settings)
        names = {"contact_tokens": ["api"], "api_tokens": ["support", "sales", "marketing", "admin"]}[table]
        assert all(loaded.grants(auth.token_for(settings, table, n)) == {n} for n in names), reader


def test_env_example_lists_every_variable_and_its_defaults(compose, model, tmp_path):
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    documented = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}
    assert used == documented
    # Its values are the defaults: copying it to .env changes nothing until it is edited.
    assert compose.model("--profile", "demo", env_file=ENV_EXAMPLE) == model
    edited = tmp_path / ".env"
    edited.write_text(ENV_EXAMPLE.read_text().replace("GATEWAY_HOST_PORT=18000", "GATEWAY_HOST_PORT=28000"))
    (published,) = compose.model(env_file=edited)["services"]["gateway"]["ports"]
    assert published["published"] == "28000"


# -- threadline demo --external -------------------------------------------------------------

@pytest.fixture
def no_local_stack(monkeypatch):
    """Fails the test if the demo touches the local stack, the topic catalog or the processes."""
    from threadline.tools import demo

    touched = []

    def refuse(what):
        def _f(*a, **k):
            touched.append(what)
            raise AssertionError(f"demo --external must not call {what}")
        return _f

    monkeypatch.setattr(demo.stack, "up", refuse("stack.up"))
    monkeypatch.setattr(demo.stack, "down", refuse("stack.down"), raising=False)
    monkeypatch.setattr(demo.apps, "start", refuse("apps.start"))
    monkeypatch.setattr(demo.apps, "stop", refuse("apps.stop"), raising=False)
    monkeypatch.setattr(demo, "apply", refuse("topics apply"))
    return touched


def test_demo_external_needs_the_gateways_secrets_and_starts_nothing(no_local_stack, tmp_path):
    from threadline.tools.demo import run_demo

    settings = Settings(home=tmp_path, gateway_host="127.0.0.1", gateway_port=9)
    with pytest.raises(ConfigError) as info:
        run_demo(settings, Console(file=io.StringIO()), external=True)
    assert "THREADLINE_WEBHOOK_SECRET" in str(info.value) and "THREADLINE_TWILIO_AUTH_TOKEN" in str(info.value)
    assert no_local_stack == []
    assert not (tmp_path / "secrets").exists(), "no random secrets: the running gateway would refuse them"


def test_demo_external_sends_signed_webhooks_to_the_configured_gateway(no_local_stack, tmp_path):
    from threadline.tools.demo import run_demo

    seen = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.path)
            self.send_response(401)  # as a gateway with other secrets would answer
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(home=tmp_path, gateway_host="127.0.0.1", gateway_port=server.server_port,
                            api_tokens="admin=an-admin-token-of-the-api", **{n: "s3cret" for n in SECRET_NAMES})
        with pytest.raises(RuntimeError, match="answered 401"):
            run_demo(settings, Console(file=io.StringIO()), external=True)
    finally:
        server.shutdown()
    assert seen and seen[0].startswith("/webhooks/")
    assert no_local_stack == []


def test_demo_external_needs_the_read_apis_tokens_and_makes_none(no_local_stack, tmp_path):
    from threadline.tools.demo import run_demo

    settings = Settings(home=tmp_path, gateway_host="127.0.0.1", gateway_port=9, **{n: "s3cret" for n in SECRET_NAMES})
    with pytest.raises(ConfigError, match="THREADLINE_API_TOKENS"):
        run_demo(settings, Console(file=io.StringIO()), external=True)
    assert no_local_stack == [] and not (tmp_path / "secrets").exists()


def test_demo_without_external_still_brings_the_local_stack_up_first(monkeypatch, tmp_path):
    from threadline.tools import demo

    class Up(Exception):
        pass

    def up(*a, **k):
        raise Up

    monkeypatch.setattr(demo.stack, "up", up)
    with pytest.raises(Up):
        demo.run_demo(Settings(home=tmp_path), Console(file=io.StringIO()))
    assert (tmp_path / "secrets" / "webhook_secret").is_file(), "the local demo makes its own secrets"
