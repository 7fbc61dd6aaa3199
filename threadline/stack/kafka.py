"""A single-node Apache Kafka broker in KRaft mode, run from Maven Central jars on Java 17.

Steps: resolve the jars (``mvn dependency:copy-dependencies`` on deploy/local/pom.xml into
the state folder, once per version), write server.properties, format the storage with
``kafka.tools.StorageTool`` on first start, launch ``kafka.Kafka``. Ready means the admin
client sees the broker in the cluster metadata, not merely an open port.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from string import Template
from urllib.parse import urlparse

from threadline.errors import ConfigError
from threadline.settings import Settings
from threadline.stack.paths import deploy_local
from threadline.stack.process import Managed, port_open, wait_until

NAME = "kafka"


def host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap.split(",")[0]
    u = urlparse(f"//{first}")
    return u.hostname or "127.0.0.1", u.port or 9092


def java_bin() -> str:
    for candidate in ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", shutil.which("java")):
        if candidate and Path(candidate).exists():
            return candidate
    raise ConfigError("no java found: the local Kafka broker needs Java 17")


def lib_dir(settings: Settings) -> Path:
    return settings.state_dir / "lib" / f"kafka-{settings.kafka_version}"


def ensure_jars(settings: Settings) -> Path:
    """Resolve Kafka's jars from Maven Central (cached in ~/.m2 and in the state folder)."""
    target = lib_dir(settings)
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise ConfigError("mvn not found: it resolves the Kafka jars from Maven Central")
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-f", str(deploy_local() / "pom.xml"), "dependency:copy-dependencies",
           f"-Dkafka.version={settings.kafka_version}", f"-Doutput.dir={target}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"mvn could not resolve Kafka {settings.kafka_version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    marker.write_text(settings.kafka_version)
    return target


def _classpath(settings: Settings) -> str:
    return f"{lib_dir(settings)}/*"


def _write_config(settings: Settings) -> Path:
    host, port = host_port(settings)
    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"the local broker listens on loopback only, not {host}")
    home = settings.state_dir / "kafka"
    template = Template((deploy_local() / "kafka" / "server.properties").read_text())
    text = template.substitute(broker_port=port, controller_port=settings.kafka_controller_port,
                               data_dir=home / "data")
    (home / "data").mkdir(parents=True, exist_ok=True)
    path = home / "server.properties"
    path.write_text(text)
    return path


def _java_opts(settings: Settings) -> list[str]:
    logs = settings.state_dir / "logs" / "kafka"
    logs.mkdir(parents=True, exist_ok=True)
    return [
        f"-Xms{settings.kafka_heap}", f"-Xmx{settings.kafka_heap}", "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={deploy_local() / 'kafka' / 'log4j2.xml'}",
        f"-Dkafka.logs.dir={logs}",
    ]


def _format(settings: Settings, config: Path) -> None:
    if (settings.state_dir / "kafka" / "data" / "meta.properties").exists():
        return
    cluster_id = subprocess.run(
        [java_bin(), "-cp", _classpath(settings), "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    result = subprocess.run(
        [java_bin(), *_java_opts(settings), "-cp", _classpath(settings), "kafka.tools.StorageTool",
         "format", "-t", cluster_id, "-c", str(config)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"kafka storage format failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")


def managed(settings: Settings) -> Managed:
    return Managed(NAME, settings.state_dir)


def ready(settings: Settings) -> bool:
    import logging

    from kafka import KafkaAdminClient

    # Refused connections are the expected answer while the broker starts: not worth a warning.
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(client_id="threadline-ready", request_timeout_ms=3000,
                                 **settings.kafka_client_config())
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

    admin = KafkaAdminClient(client_id="threadline-ready", request_timeout_ms=5000, **settings.kafka_client_config())
    try:
        admin.describe_groups(["threadline-readiness-probe"])
        return True
    finally:
        admin.close()


def broker_version(settings: Settings) -> str | None:
    """The running broker's release, read from the jar it runs (local stack only)."""
    jar = next(iter(lib_dir(settings).glob("kafka_2.13-*.jar")), None)
    return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar") if jar else None


def start(settings: Settings, timeout: float = 90.0) -> bool:
    """Start the broker unless ours already runs. Returns True if it started one."""
    m = managed(settings)
    if m.running():
        wait_until(lambda: ready(settings), timeout, what="kafka")
        return False
    host, port = host_port(settings)
    if port_open(host, port):
        raise ConfigError(f"{host}:{port} is taken by a process this state folder did not start; "
                          "stop it, or set THREADLINE_KAFKA_BOOTSTRAP to use it")
    ensure_jars(settings)
    config = _write_config(settings)
    _format(settings, config)
    m.launch([java_bin(), *_java_opts(settings), "-cp", _classpath(settings), "kafka.Kafka", str(config)],
             ready=lambda: ready(settings) and coordinator_ready(settings), timeout=timeout)
    return True

