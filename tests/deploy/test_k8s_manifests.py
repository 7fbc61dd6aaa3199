"""deploy/k8s: every manifest validates, and the deployment says what the issue asks.

Each document of the base's files and of the three renders (`kubectl kustomize` of base, dev and
production) is validated against the Kubernetes 1.34 OpenAPI schemas (strict) or, for
Strimzi resources, the generated CRD schemas. Then: the Kafka cluster is KRaft with three brokers,
replication factor 3 and two in-sync replicas; every container runs `threadline <subcommand>`
that exists; probes, ports, scrape annotations, security contexts, resources, references between
objects, and what each overlay changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_k8s_schemas import KUSTOMIZATIONS, REPO, rendered, source_documents, validate_document
from threadline.catalog import CATALOG
from threadline.tools.k8s import topic_resource
from threadline.settings import PG_KEYSTORE, PG_OWNER, PG_READER, Settings

IMAGE = "ghcr.io/threadline/threadline"
THREADLINE = Path(sys.executable).parent / "threadline"
RENDERS = tuple(KUSTOMIZATIONS)
# component → (kind, workload name, subcommand, ops port)
COMPONENTS = {
    "gateway": ("Deployment", "threadline-gateway", ["serve", "gateway"], 18000),
    "api": ("Deployment", "threadline-api", ["serve", "api"], 18001),
    "worker": ("StatefulSet", "threadline-worker", ["worker", "--stages", "route,conversations"], 18002),
    "identity": ("StatefulSet", "threadline-identity", ["worker", "--stages", "identity"], 18002),
    "projector": ("Deployment", "threadline-projector", ["project"], 18003),
}
# Secrets the Strimzi operators write: the KafkaUsers' credentials and the cluster CA certificate.
STRIMZI_SECRETS = {"threadline", "apicurio-registry", "threadline-cluster-ca-cert"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def _source_params():
    docs = source_documents(KUSTOMIZATIONS["base"])
    return [pytest.param(doc, id=f"{path.relative_to(REPO)}:{doc['kind']}/{doc['metadata']['name']}") for path, doc in docs]


def of(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} in the render"
    return found if name is None else found[0]


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers(docs):
    for w in docs:
        if w["kind"] in WORKLOAD_KINDS:
            for c in pod_spec(w).get("initContainers", []) + pod_spec(w)["containers"]:
                yield w, c


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("doc", _source_params())
def test_every_base_file_document_validates(doc):
    validate_document(doc)


@pytest.mark.parametrize("name", RENDERS)
def test_every_rendered_document_validates(name):
    docs = rendered(name)
    assert len(docs) >= 35
    failures = []
    for doc in docs:
        try:
            validate_document(doc)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"threadline"}


def test_renders_hold_every_kind_the_deployment_needs():
    for name in RENDERS:
        kinds = {d["kind"] for d in rendered(name)}
        assert {"Namespace", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "ConfigMap", "Deployment",
                "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds, name


# ---------------------------------------------------------------- Kafka


@pytest.mark.parametrize("name", RENDERS)
def test_kafka_is_kraft_with_three_brokers_rf3_and_two_in_sync(name):
    docs = rendered(name)
    kafka = of(docs, "Kafka", "threadline")
    assert kafka["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    assert config["auto.create.topics.enable"] is False
    assert "topicOperator" in kafka["spec"]["entityOperator"] and "userOperator" in kafka["spec"]["entityOperator"]
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in of(docs, "KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"] == "threadline"]
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) == 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) == 3
    # the broker the local stack and the integration tests run
    assert kafka["spec"]["kafka"]["version"] == Settings.flat_defaults()["kafka_version"]


def test_the_threadline_listener_is_tls_with_scram_and_the_settings_point_at_it():
    docs = rendered("production")
    listeners = {l["name"]: l for l in of(docs, "Kafka", "threadline")["spec"]["kafka"]["listeners"]}
    data = of(docs, "ConfigMap", "threadline-config")["data"]
    port = int(data["THREADLINE_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    scram = next(l for l in listeners.values() if l["port"] == port)
    assert scram["tls"] is True and scram["authentication"] == {"type": "scram-sha-512"}
    assert data["THREADLINE_KAFKA_BOOTSTRAP"] == f"threadline-kafka-bootstrap:{port}"
    assert (data["THREADLINE_KAFKA_SECURITY_PROTOCOL"], data["THREADLINE_KAFKA_SASL_MECHANISM"]) == ("SASL_SSL", "SCRAM-SHA-512")
    user = of(docs, "KafkaUser", data["THREADLINE_KAFKA_SASL_USERNAME"])
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert data["THREADLINE_REPLICATION_FACTOR"] == "3"
    # the registry talks to the mTLS listener as its own KafkaUser
    registry = of(docs, "Deployment", "apicurio-registry")
    env = {e["name"]: e for e in pod_spec(registry)["containers"][0]["env"]}
    mtls = next(l for l in listeners.values() if l["port"] == int(env["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"]["value"].rsplit(":", 1)[1]))
    assert mtls["authentication"] == {"type": "tls"}
    assert of(docs, "KafkaUser", "apicurio-registry")["spec"]["authentication"]["type"] == "tls"
    assert env["APICURIO_STORAGE_KIND"]["value"] == "kafkasql"
    assert pod_spec(registry)["containers"][0]["image"] == "apicurio/apicurio-registry:3.0.9"


@pytest.mark.parametrize("name", RENDERS)
def test_kustomize_leaves_the_topics_as_the_catalog_declares_them(name):
    topics = of(rendered(name), "KafkaTopic")
    want = {resource["metadata"]["name"]: resource for resource in (topic_resource(s) for s in CATALOG)}
    assert {t["metadata"]["name"] for t in topics} == set(want)
    for topic in topics:
        expected = want[topic["metadata"]["name"]]
        assert topic["spec"] == expected["spec"]
        assert topic["metadata"]["labels"] == {**expected["metadata"]["labels"], "app.kubernetes.io/part-of": "threadline"}


def test_kustomize_changes_no_strimzi_resource_of_the_base_but_its_namespace_and_label():
    sources = {(d["kind"], d["metadata"]["name"]): d for _, d in source_documents(KUSTOMIZATIONS["base"])
               if d["apiVersion"].startswith("kafka.strimzi.io/")}
    assert len(sources) == 4 + len(CATALOG)
    for doc in rendered("base"):
        if not doc["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        source = sources.pop((doc["kind"], doc["metadata"]["name"]))
        meta, source_meta = doc.pop("metadata"), source["metadata"]
        assert doc == {k: v for k, v in source.items() if k != "metadata"}
        assert meta == {**source_meta, "namespace": "threadline",
                        "labels": {**source_meta.get("labels", {}), "app.kubernetes.io/part-of": "threadline"}}
    assert not sources


# ---------------------------------------------------------------- the Threadline containers


def test_every_threadline_container_runs_an_existing_subcommand():
    commands = set()
    for name in RENDERS:
        for workload, container in containers(rendered(name)):
            if not container["image"].startswith(IMAGE):
                continue
            assert "command" not in container, f"{workload['metadata']['name']}: the image's entrypoint is `threadline`"
            commands.add(tuple(container["args"]))
    assert commands == {tuple(c[2]) for c in COMPONENTS.values()}
    for args in sorted(commands):
        done = subprocess.run([str(THREADLINE), *args, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"threadline {' '.join(args)} --help: {done.stderr}"
    refused = subprocess.run([str(THREADLINE), "serve", "nothing", "--help"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, "the check must be able to fail"


@pytest.mark.parametrize("name", RENDERS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_probes_ports_and_scrape_annotations_agree_with_the_settings(name, component):
    kind, workload_name, args, port = COMPONENTS[component]
    docs = rendered(name)
    workload = of(docs, kind, workload_name)
    container = pod_spec(workload)["containers"][0]
    assert container["args"] == args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    data = of(docs, "ConfigMap", "threadline-config")["data"]
    setting = {"gateway": "THREADLINE_GATEWAY_PORT", "api": "THREADLINE_API_PORT",
               "worker": "THREADLINE_WORKER_OPS_PORT", "identity": "THREADLINE_WORKER_OPS_PORT",
               "projector": "THREADLINE_PROJECTOR_OPS_PORT"}[component]
    assert data[setting] == str(port) == str(Settings.flat_defaults()[setting.removeprefix("THREADLINE_").lower()])
    assert data["THREADLINE_OPS_HOST"] == data["THREADLINE_GATEWAY_HOST"] == data["THREADLINE_API_HOST"] == "0.0.0.0"
    assert {"name": "threadline-config"} in [e.get("configMapRef") for e in container["envFrom"]]
    image = container["image"]
    assert image.startswith(IMAGE + ":") and not image.endswith(":latest"), "kustomize images: sets the tag"


def test_every_configmap_key_is_a_setting():
    known = {f"THREADLINE_{f.upper()}" for f in Settings.flat_defaults()}
    for name in RENDERS:
        data = of(rendered(name), "ConfigMap", "threadline-config")["data"]
        assert set(data) <= known, f"{name}: not settings: {sorted(set(data) - known)}"
    files = {e["name"] for _, c in containers(rendered("production")) for e in c.get("env", []) if e["name"].startswith("THREADLINE_")}
    assert files <= known, sorted(files - known)


@pytest.mark.parametrize("name", RENDERS)
def test_every_file_setting_names_a_file_a_mounted_secret_provides(name):
    docs = rendered(name)
    config = of(docs, "ConfigMap", "threadline-config")["data"]
    checked = 0
    for workload, container in containers(docs):
        if not container["image"].startswith(IMAGE):
            continue
        env = {**config, **{e["name"]: e.get("value") for e in container.get("env", [])}}
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container["volumeMounts"]}  # claims: no volume
        for key, value in env.items():
            if not key.endswith(("_FILE", "_CAFILE")):
                continue
            folder, file = value.rsplit("/", 1)
            secret = mounts.get(folder, {}).get("secret")
            assert secret, f"{name}: {workload['metadata']['name']} {key}={value}: no Secret mounted at {folder}"
            assert file in {i["path"] for i in secret["items"]}, f"{key}: {secret['secretName']} gives no {file}"
            checked += 1
    assert checked >= 4 * 2 + 6, "the Kafka password and CA for every component, the gateway's webhook secrets"


@pytest.mark.parametrize("name", RENDERS)
def test_every_container_is_non_root_read_only_with_tmp_and_resources(name):
    for workload, container in containers(rendered(name)):
        where = f"{name}: {workload['metadata']['name']}/{container['name']}"
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is no emptyDir"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], where
        if container["image"].startswith(IMAGE):
            assert pod["securityContext"]["runAsUser"] == 10001, where
            assert set(mounts) >= {"/tmp", "/var/lib/threadline"}, where


@pytest.mark.parametrize("name", RENDERS)
@pytest.mark.parametrize("workload", ["threadline-worker", "threadline-identity"])
def test_the_worker_keeps_its_tables_on_its_own_volume_behind_a_headless_service(name, workload):
    docs = rendered(name)
    worker = of(docs, "StatefulSet", workload)
    home = of(docs, "ConfigMap", "threadline-config")["data"]["THREADLINE_HOME"]
    claims = {c["metadata"]["name"]: c for c in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(worker)["containers"][0]["volumeMounts"]}
    assert mounts[home] in claims, "THREADLINE_HOME (faust's RocksDB tables) is on the volume claim"
    assert mounts[home] not in {v["name"] for v in pod_spec(worker).get("volumes", [])}
    service = of(docs, "Service", worker["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", RENDERS)
def test_references_between_objects_resolve(name):
    docs = rendered(name)
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]

    def pods_matching(selector):
        return [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]

    for w in workloads:
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for service in of(docs, "Service"):
        matched = pods_matching(service["spec"]["selector"])
        assert len(matched) == 1, f"{name}: Service {service['metadata']['name']} selects {len(matched)} workloads"
        port_names = {p["name"] for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    for pdb in of(docs, "PodDisruptionBudget"):
        assert len(pods_matching(pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]["name"]
    for hpa in of(docs, "HorizontalPodAutoscaler"):
        target = of(docs, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= target["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in of(docs, "HorizontalPodAutoscaler")} == {"threadline-gateway", "threadline-api"}
    # every Secret a pod reads is in the render, written by Strimzi, or (production) created out of band
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} | STRIMZI_SECRETS
    if name == "production":
        secrets.add("threadline-secrets")
    for w in workloads:
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, (w["metadata"]["name"], v)
        for c in pod_spec(w)["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, (w["metadata"]["name"], e["name"])
    # the Strimzi-written Secrets follow from the resources that make them
    assert {u["metadata"]["name"] for u in of(docs, "KafkaUser")} | {"threadline-cluster-ca-cert"} == STRIMZI_SECRETS
    assert of(docs, "Kafka")[0]["metadata"]["name"] + "-cluster-ca-cert" in STRIMZI_SECRETS


def _env(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_key(env: dict, name: str) -> str:
    return env[name]["valueFrom"]["secretKeyRef"]["key"]


@pytest.mark.parametrize("name", RENDERS)
def test_the_read_api_reads_postgres_as_its_read_only_role_and_the_projector_as_the_owner(name):
    """docs/operations.md, "Database roles": the API's container is given the reader's DSN and no
    DSN that can write; the projector the owner's; no other component a DSN at all."""
    docs = rendered(name)
    dsn_settings = {"THREADLINE_PG_DSN", "THREADLINE_PG_API_DSN", "THREADLINE_PG_PASSWORD", "THREADLINE_PG_PASSWORD_FILE",
                    "THREADLINE_PG_API_PASSWORD", "THREADLINE_PG_API_PASSWORD_FILE", "THREADLINE_PG_KEYSTORE_DSN",
                    "THREADLINE_PG_KEYSTORE_PASSWORD", "THREADLINE_PG_KEYSTORE_PASSWORD_FILE"}
    wanted = {"api": {"THREADLINE_PG_API_DSN": "pg-api-dsn"}, "projector": {"THREADLINE_PG_DSN": "pg-dsn"},
              "gateway": {"THREADLINE_PG_KEYSTORE_DSN": "pg-keystore-dsn"},
              "worker": {"THREADLINE_PG_KEYSTORE_DSN": "pg-keystore-dsn"},
              "identity": {"THREADLINE_PG_KEYSTORE_DSN": "pg-keystore-dsn"}}
    for component, (kind, workload, _, _) in COMPONENTS.items():
        (container,) = pod_spec(of(docs, kind, workload))["containers"]
        env = _env(container)
        given = {k: _secret_key(env, k) for k in dsn_settings & set(env)}
        assert given == wanted[component], (name, component, given)
        assert ref_names(container) <= {"threadline-config"}, (name, component)
    configmap = of(docs, "ConfigMap", "threadline-config")["data"]
    assert not dsn_settings & set(configmap), "DSNs are secrets, not config"
    secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "threadline-secrets"]
    for secret in secrets:  # the example (base) and dev's values: two roles, the reader's in pg-api-dsn
        from psycopg.conninfo import conninfo_to_dict

        users = {k: conninfo_to_dict(secret["stringData"][k])["user"] for k in ("pg-dsn", "pg-api-dsn", "pg-keystore-dsn")}
        assert users == {"pg-dsn": PG_OWNER, "pg-api-dsn": PG_READER, "pg-keystore-dsn": PG_KEYSTORE}, (name, users)


PRIVACY_FILES = {"THREADLINE_PRIVACY_MASTER_KEY_FILE": "privacy-master-key",
                 "THREADLINE_PRIVACY_PSEUDONYM_KEY_FILE": "privacy-pseudonym-key"}


@pytest.mark.parametrize("name", RENDERS)
def test_every_component_that_seals_or_opens_gets_the_privacy_keys_from_the_secret(name):
    """Privacy on (docs/privacy.md): the gateway (contacts, ingest.dlq.v1) and the worker
    (streams.dlq.v1) seal, the projector opens; each reads the master and pseudonym keys as files
    of the Secret threadline-secrets, never as values in the environment or the ConfigMap; the read
    API holds no key. The gateway and the worker reach the key store as its own role."""
    docs = rendered(name)
    config = of(docs, "ConfigMap", "threadline-config")["data"]
    assert not {k for k in config if k.startswith("THREADLINE_PRIVACY_")}, "keys are secrets, not config"
    holders = set()
    for component, (kind, workload, _, _) in COMPONENTS.items():
        w = of(docs, kind, workload)
        (container,) = pod_spec(w)["containers"]
        env = _env(container)
        assert not {"THREADLINE_PRIVACY_MASTER_KEY", "THREADLINE_PRIVACY_PSEUDONYM_KEY"} & set(env), component
        if "THREADLINE_PRIVACY_MASTER_KEY_FILE" not in env:
            continue
        holders.add(component)
        volumes = {v["name"]: v for v in pod_spec(w)["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for setting, key in PRIVACY_FILES.items():
            folder, file = env[setting]["value"].rsplit("/", 1)
            mount = mounts[folder]
            secret = volumes[mount["name"]]["secret"]
            assert mount.get("readOnly") and secret["secretName"] == "threadline-secrets", (component, setting)
            assert {"key": key, "path": file} in secret["items"], (component, setting)
    assert holders == {"gateway", "worker", "identity", "projector"}, (name, holders)
    for secret in (d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "threadline-secrets"):
        assert set(PRIVACY_FILES.values()) <= set(secret["stringData"]), name
    if name == "dev":  # dev's keys are real keys: the components start with privacy on
        from schemas.privacy import decode_key

        values = of(docs, "Secret", "threadline-secrets")["stringData"]
        assert all(len(decode_key(values[k], k)) == 32 for k in PRIVACY_FILES.values())


def ref_names(container) -> set[str]:
    return {r["configMapRef"]["name"] for r in container.get("envFrom", []) if "configMapRef" in r}


def test_dev_postgres_makes_the_roles_with_the_compose_script_and_the_secrets_passwords():
    docs = rendered("dev")
    postgres = of(docs, "StatefulSet", "postgres")
    (container,) = pod_spec(postgres)["containers"]
    env = _env(container)
    assert env["POSTGRES_USER"]["value"] == "postgres", "the superuser is no role a component uses"
    assert (env["DB_OWNER"]["value"], env["DB_READER"]["value"], env["DB_KEYSTORE"]["value"]) == (
        PG_OWNER, PG_READER, PG_KEYSTORE)
    # the init script: mounted where the image's entrypoint runs it on the first start
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(postgres)["volumes"]}
    init = volumes[mounts["/docker-entrypoint-initdb.d"]]["configMap"]["name"]
    script = of(docs, "ConfigMap", init)["data"]["20-threadline-roles.sh"]
    assert script == (REPO / "deploy" / "compose" / "postgres" / "20-threadline-roles.sh").read_text()
    # the passwords it sets are the ones in the DSNs the components get
    from psycopg.conninfo import conninfo_to_dict

    pg_secret = of(docs, "Secret", "postgres")["stringData"]
    dsns = of(docs, "Secret", "threadline-secrets")["stringData"]
    for user_var, password_var, key in (("DB_OWNER", "DB_OWNER_PASSWORD", "pg-dsn"),
                                        ("DB_READER", "DB_READER_PASSWORD", "pg-api-dsn"),
                                        ("DB_KEYSTORE", "DB_KEYSTORE_PASSWORD", "pg-keystore-dsn")):
        dsn = conninfo_to_dict(dsns[key])
        assert dsn["user"] == env[user_var]["value"]
        assert dsn["password"] == pg_secret[_secret_key(env, password_var)], key
        assert dsn["password"] != pg_secret[_secret_key(env, "POSTGRES_PASSWORD")]


# ---------------------------------------------------------------- overlays


def _storage(docs):
    return of(docs, "KafkaNodePool", "dual-role")["spec"]["storage"]


def test_dev_is_small_ephemeral_and_has_its_own_postgres():
    docs = rendered("dev")
    assert [v["type"] for v in _storage(docs)["volumes"]] == ["ephemeral"]
    assert of(docs, "StatefulSet", "threadline-worker")["spec"]["replicas"] == 1
    assert of(docs, "HorizontalPodAutoscaler", "threadline-gateway")["spec"]["maxReplicas"] == 2
    postgres = of(docs, "StatefulSet", "postgres")
    assert pod_spec(postgres)["containers"][0]["image"] == "postgres:16"
    secret = of(docs, "Secret", "threadline-secrets")
    assert secret["stringData"]["pg-dsn"].startswith("postgresql://threadline:threadline-dev@postgres:5432/")
    assert secret["stringData"]["pg-api-dsn"].startswith("postgresql://threadline_reader:threadline-reader-dev@postgres:5432/")
    assert "CHANGE-ME" not in str(secret["stringData"])
    for pdb in of(docs, "PodDisruptionBudget"):
        assert "minAvailable" not in pdb["spec"], "one replica each: a minAvailable would block every drain"


def test_production_is_persistent_larger_and_ships_no_placeholder_secret():
    docs = rendered("production")
    base = rendered("base")
    volumes = _storage(docs)["volumes"]
    assert [(v["type"], v["deleteClaim"]) for v in volumes] == [("persistent-claim", False)]
    assert int(volumes[0]["size"].removesuffix("Gi")) >= 100
    assert of(docs, "StatefulSet", "threadline-worker")["spec"]["replicas"] >= 2
    assert of(docs, "Kafka", "threadline")["spec"]["kafka"]["rack"] == {"topologyKey": "topology.kubernetes.io/zone"}
    for hpa in ("threadline-gateway", "threadline-api"):
        prod, dflt = of(docs, "HorizontalPodAutoscaler", hpa)["spec"], of(base, "HorizontalPodAutoscaler", hpa)["spec"]
        assert prod["minReplicas"] > dflt["minReplicas"] and prod["maxReplicas"] > dflt["maxReplicas"]
    assert of(docs, "Deployment", "apicurio-registry")["spec"]["replicas"] == 2
    assert not [d for d in docs if d["kind"] == "Secret"], "production expects threadline-secrets from outside"
    assert "CHANGE-ME" not in str(docs)
    assert not [d for d in docs if d["metadata"]["name"] == "postgres"], "production uses an external database"
    # the base ships the example, clearly marked
    example = of(base, "Secret", "threadline-secrets")
    assert "placeholder" in example["metadata"]["annotations"]["threadline.io/example"]
    tables = {k: example["stringData"].pop(k) for k in ("contact-tokens", "api-tokens")}
    assert set(example["stringData"].values()) - {"CHANGE-ME"} == {example["stringData"]["pg-dsn"],
                                                                   example["stringData"]["pg-api-dsn"],
                                                                   example["stringData"]["pg-keystore-dsn"]}
    assert {line.partition("=")[2] for t in tables.values() for line in t.splitlines()} == {"CHANGE-ME"}


@pytest.mark.parametrize("name", RENDERS)
def test_the_stream_workloads_run_every_stage_once_the_identity_graph_apart(name):
    """The workers run the route and conversations stages; the identity stage (the graph's single
    writer) runs in a StatefulSet of its own; together they run every stage of the worker, each
    in one workload, all of them in one app (the consumer groups) with the same settings."""
    from streams.app import STAGES

    docs = rendered(name)
    stages: dict[str, str] = {}
    for workload, container in containers(docs):
        args = container.get("args", [])
        if container["image"].startswith(IMAGE) and args[:1] == ["worker"]:
            assert args[1] == "--stages" and "--app-id" not in args, (name, args)
            for stage in args[2].split(","):
                assert stage not in stages, f"{name}: {stage} runs in {stages[stage]} and {workload['metadata']['name']}"
                stages[stage] = workload["metadata"]["name"]
    assert stages == {"route": "threadline-worker", "conversations": "threadline-worker", "identity": "threadline-identity"}
    assert set(stages) == set(STAGES), "every stage the worker has runs somewhere"
    worker, identity = of(docs, "StatefulSet", "threadline-worker"), of(docs, "StatefulSet", "threadline-identity")
    assert identity["spec"]["replicas"] == 1
    assert pod_spec(worker)["containers"][0]["envFrom"] == pod_spec(identity)["containers"][0]["envFrom"]
    assert pod_spec(worker)["containers"][0]["env"] == pod_spec(identity)["containers"][0]["env"]
