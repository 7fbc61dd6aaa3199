"""A single-node Apache Kafka broker in KRaft mode, run from Maven Central jars on Java 17.

Steps: resolve the jars (``mvn dependency:copy-dependencies`` on deploy/local/pom.xml into
the state folder, once per version), write server.properties, format the storage with
``kafka.tools.StorageTool`` on first start, launch ``kafka.Kafka``. Ready means the admin
client sees the broker in the cluster metadata, not merely an open port. ``Broker`` does the
launching for any broker from these jars: the local stack's, and secured ones beside it (its
listeners, TLS and SASL given as server.properties, SCRAM users at format time).
"""

from __future__ import annotations

from collections.abc import Callable
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from urllib.parse import urlparse

from threadline.errors import ConfigError
from threadline.process import Managed, port_open, wait_until
from threadline.settings import Settings
from threadline.tools.stack.paths import build_root, deploy_local

NAME = "kafka"


def host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap.split(",")[0]
    u = urlparse(f"//{first}")
    return u.hostname or "127.0.0.1", u.port or 9092


def java_bin() -> str:
    for candidate in ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", shutil.which("java")):
        if candidate and Path(candidate).exists():
            return candidate
    raise ConfigError("no java found: the local Kafka broker needs Java 17")


def lib_dir(settings: Settings) -> Path:
    return build_root() / "lib" / f"kafka-{settings.stack.kafka_version}"  # the set-up step's, for every state folder


def ensure_jars(settings: Settings) -> Path:
    """Resolve Kafka's jars from Maven Central (cached in ~/.m2 and in the state folder)."""
    target = lib_dir(settings)
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise ConfigError("mvn not found: it resolves the Kafka jars from Maven Central")
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(deploy_local() / "pom.xml"),
        "dependency:copy-dependencies",
        f"-Dkafka.version={settings.stack.kafka_version}",
        f"-Doutput.dir={target}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(
            f"mvn could not resolve Kafka {settings.stack.kafka_version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    marker.write_text(settings.stack.kafka_version)
    return target


@dataclass(frozen=True)
class Broker:
    """One single-node KRaft broker: the local stack's, or another one beside it (tests start a
    secured broker from the same jars). Its config, data, logs and pid file live under ``home``.

    ``properties`` are added to deploy/local/kafka/server.properties and win over its lines:
    listeners (``listener_properties``), TLS (``tls_properties``), SASL (``sasl_properties``).
    ``scram`` are credentials written at format time, as ``kafka-storage format --add-scram``
    takes them: ``SCRAM-SHA-512=[name=threadline,password=...]``.
    """

    home: Path
    lib: Path
    broker_port: int
    controller_port: int
    heap: str = "512m"
    properties: dict[str, str] = field(default_factory=dict)
    scram: tuple[str, ...] = ()

    @property
    def config_path(self) -> Path:
        return self.home / "kafka" / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "kafka" / "data"

    def managed(self) -> Managed:
        return Managed(NAME, self.home)

    def java(self, main: str, *args: str) -> list[str]:
        logs = self.home / "logs" / "kafka"
        logs.mkdir(parents=True, exist_ok=True)
        return [
            java_bin(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={deploy_local() / 'kafka' / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            f"{self.lib}/*",
            main,
            *args,
        ]

    def write_config(self) -> Path:
        template = Template((deploy_local() / "kafka" / "server.properties").read_text())
        text = template.substitute(
            broker_port=self.broker_port, controller_port=self.controller_port, data_dir=self.data_dir
        )
        if self.properties:
            text += "\n# this broker's own listeners and security\n" + "".join(
                f"{k}={v}\n" for k, v in self.properties.items()
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)
        return self.config_path

    def format(self) -> None:
        """Format the storage once (a formatted data folder keeps its cluster id and credentials)."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = (
            subprocess.run(
                [java_bin(), "-cp", f"{self.lib}/*", "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        scram = [arg for entry in self.scram for arg in ("--add-scram", entry)]
        result = subprocess.run(
            self.java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_path), *scram),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ConfigError(f"kafka storage format failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")

    def launch(self, ready, timeout: float) -> None:
        """Write the config, format on first start, start ``kafka.Kafka`` and wait for ``ready()``."""
        self.write_config()
        self.format()
        self.managed().launch(self.java("kafka.Kafka", str(self.config_path)), ready=ready, timeout=timeout)


def listener_properties(
    listeners: dict[str, tuple[str, int]], controller_port: int, *, inter_broker: str, host: str = "127.0.0.1"
) -> dict[str, str]:
    """server.properties for named listeners, ``{name: (security protocol, port)}``, on ``host``;
    the KRaft controller stays PLAINTEXT on loopback."""
    return {
        "listeners": ",".join(
            [*(f"{n}://{host}:{p}" for n, (_, p) in listeners.items()), f"CONTROLLER://127.0.0.1:{controller_port}"]
        ),
        "advertised.listeners": ",".join(f"{n}://{host}:{p}" for n, (_, p) in listeners.items()),
        "listener.security.protocol.map": ",".join(
            [*(f"{n}:{proto}" for n, (proto, _) in listeners.items()), "CONTROLLER:PLAINTEXT"]
        ),
        "inter.broker.listener.name": inter_broker,
    }


def tls_properties(keystore_pem: Path, truststore_pem: Path | None = None) -> dict[str, str]:
    """The broker's certificate as a PEM keystore (PKCS#8 key, then the chain); a PEM truststore
    for client certificates, if given."""
    props = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore_pem)}
    if truststore_pem is not None:
        props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": str(truststore_pem)})
    return props


def sasl_properties(listener: str, mechanisms: tuple[str, ...]) -> dict[str, str]:
    """SASL/SCRAM on one listener, the credentials kept in the cluster metadata (``Broker.scram``)."""
    props = {"sasl.enabled.mechanisms": ",".join(mechanisms)}
    for m in mechanisms:
        props[f"listener.name.{listener.lower()}.{m.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return props


def local_broker(settings: Settings) -> Broker:
    """The local stack's PLAINTEXT broker on loopback, in the state folder."""
    host, port = host_port(settings)
    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"the local broker listens on loopback only, not {host}")
    return Broker(
        settings.state_dir, lib_dir(settings), port, settings.stack.kafka_controller_port, settings.stack.kafka_heap
    )


def managed(settings: Settings) -> Managed:
    return Managed(NAME, settings.state_dir)  # = local_broker(settings).managed()


def ready(settings: Settings) -> bool:
    import logging

    from kafka import KafkaAdminClient

    # Refused connections are the expected answer while the broker starts: not worth a warning.
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            client_id="threadline-ready", request_timeout_ms=3000, **settings.kafka.client_config()
        )
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
    finally:
        kafka_log.setLevel(level)


def coordinator_ready(settings: Settings) -> bool:
    """A fresh broker answers metadata before it can coordinate consumer groups (its offsets
    topic is created on first use): ready for Threadline means groups can be joined too."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(client_id="threadline-ready", request_timeout_ms=5000, **settings.kafka.client_config())
    try:
        admin.describe_groups(["threadline-readiness-probe"])
        return True
    finally:
        admin.close()


def broker_version(settings: Settings) -> str | None:
    """The running broker's release, read from the jar it runs (local stack only)."""
    jar = next(iter(lib_dir(settings).glob("kafka_2.13-*.jar")), None)
    return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar") if jar else None


def start(settings: Settings, *, check_built: Callable[[], None], timeout: float = 90.0) -> bool:
    """Start the broker unless ours already runs. Returns True if it started one."""
    m = managed(settings)
    if m.running():
        wait_until(lambda: ready(settings), timeout, what="kafka")
        return False
    host, port = host_port(settings)
    if port_open(host, port):
        raise ConfigError(
            f"{host}:{port} is taken by a process this state folder did not start; "
            "stop it, or set THREADLINE_KAFKA_BOOTSTRAP to use it"
        )
    check_built()  # built by the set-up step, never here: no download inside a start
    local_broker(settings).launch(lambda: ready(settings) and coordinator_ready(settings), timeout)
    return True
