"""A second, secured Kafka broker from the local stack's jars, beside the shared one.

Listeners: SASL_SSL (SCRAM-SHA-512 and SCRAM-SHA-256, users created at format time) and SSL
with a required client certificate (mTLS); the broker certificate is signed by a CA made in the
test. Inter-broker and controller traffic stay PLAINTEXT on loopback. Ports are free ones, the
state is a temporary folder, and the broker is stopped at the end of the session.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tls_certs import Pki, make_pki
from threadline.settings import Settings
from threadline.tools.stack import kafka_broker
from threadline.tools.stack.setup import require
from threadline.process import free_port

USER_512, PASSWORD_512 = "threadline", "scram-512-secret"
USER_256, PASSWORD_256 = "threadline256", "scram-256-secret"


@dataclass(frozen=True)
class SecuredKafka:
    home: Path
    sasl_bootstrap: str
    mtls_bootstrap: str
    pki: Pki
    start_seconds: float

    def sasl_env(self, **overrides: str) -> dict[str, str]:
        """THREADLINE_* variables for the SASL_SSL listener as threadline-512 (override any)."""
        env = {
            "THREADLINE_HOME": str(self.home),
            "THREADLINE_KAFKA_BOOTSTRAP": self.sasl_bootstrap,
            "THREADLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "THREADLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "THREADLINE_KAFKA_SASL_USERNAME": USER_512,
            "THREADLINE_KAFKA_SASL_PASSWORD": PASSWORD_512,
            "THREADLINE_KAFKA_SSL_CAFILE": str(self.pki.ca),
            "THREADLINE_LOG_FORMAT": "json",
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    def mtls_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "THREADLINE_HOME": str(self.home),
            "THREADLINE_KAFKA_BOOTSTRAP": self.mtls_bootstrap,
            "THREADLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "THREADLINE_KAFKA_SSL_CAFILE": str(self.pki.ca),
            "THREADLINE_KAFKA_SSL_CERTFILE": str(self.pki.client_cert),
            "THREADLINE_KAFKA_SSL_KEYFILE": str(self.pki.client_key),
            "THREADLINE_LOG_FORMAT": "json",
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    def settings(self, env: dict[str, str] | None = None) -> Settings:
        """Settings as a process with exactly these variables would read them."""
        env = env if env is not None else self.sasl_env()
        fields = {k.removeprefix("THREADLINE_").lower(): v for k, v in env.items()}
        return Settings(**fields)


def clean_environ(env: dict[str, str]) -> dict[str, str]:
    """The test's environment without any THREADLINE_* of its own, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    return {**base, **env}


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory) -> SecuredKafka:
    home = tmp_path_factory.mktemp("secured-kafka")
    pki = make_pki(home / "pki")
    keystore = home / "pki" / "broker-keystore.pem"
    keystore.write_bytes(pki.server_key.read_bytes() + pki.server_cert.read_bytes())
    require(Settings(), "kafka")  # the jars of the local stack, fetched by the set-up step
    lib = kafka_broker.lib_dir(Settings())
    sasl, ssl, internal, controller = (free_port() for _ in range(4))
    props = {
        **kafka_broker.listener_properties(
            {"SASL_SSL": ("SASL_SSL", sasl), "SSL": ("SSL", ssl), "INTERNAL": ("PLAINTEXT", internal)},
            controller,
            inter_broker="INTERNAL",
        ),
        **kafka_broker.tls_properties(keystore, truststore_pem=pki.ca),
        **kafka_broker.sasl_properties("SASL_SSL", ("SCRAM-SHA-512", "SCRAM-SHA-256")),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    broker = kafka_broker.Broker(
        home,
        lib,
        sasl,
        controller,
        heap="384m",
        properties=props,
        scram=(
            f"SCRAM-SHA-512=[name={USER_512},password={PASSWORD_512}]",
            f"SCRAM-SHA-256=[name={USER_256},password={PASSWORD_256}]",
        ),
    )
    cluster = SecuredKafka(home, f"127.0.0.1:{sasl}", f"127.0.0.1:{ssl}", pki, 0.0)
    started = time.monotonic()
    secured = cluster.settings()
    try:
        broker.launch(lambda: kafka_broker.ready(secured) and kafka_broker.coordinator_ready(secured), timeout=120)
        cluster = SecuredKafka(home, cluster.sasl_bootstrap, cluster.mtls_bootstrap, pki, time.monotonic() - started)
        print(
            f"\nsecured kafka broker: SASL_SSL at {cluster.sasl_bootstrap}, mTLS at {cluster.mtls_bootstrap}, "
            f"ready in {cluster.start_seconds:.1f} s"
        )
        yield cluster
    finally:
        broker.managed().stop(30)
        assert not broker.managed().running()
