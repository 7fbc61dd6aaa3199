"""Kafka security settings: validation, what each client library is given, and how a failed
bootstrap is explained. No broker here (tests/integration/secured has the real one)."""

from __future__ import annotations

import os
import ssl

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from tests.tls_certs import make_pki
from threadline.errors import ConfigError, KafkaUnavailable
from threadline.kafka import aiokafka_config, broker_credentials, explain_connection_failure, ssl_context
from threadline.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("THREADLINE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def scram(**over) -> Settings:
    fields = dict(
        kafka_bootstrap="kafka.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="threadline",
        kafka_sasl_password="pw",
    )
    fields.update(over)
    return Settings(**{k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(kafka_sasl_username=None), "kafka_sasl_mechanism=SCRAM-SHA-512 needs kafka_sasl_username"),
        (dict(kafka_sasl_password=None), "needs kafka_sasl_password or kafka_sasl_password_file"),
        (dict(kafka_sasl_mechanism=None), "kafka_security_protocol=SASL_SSL needs kafka_sasl_mechanism"),
        (
            dict(kafka_sasl_mechanism="GSSAPI"),
            "kafka_sasl_mechanism=GSSAPI: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            dict(kafka_security_protocol="SSL"),
            "kafka_sasl_mechanism=SCRAM-SHA-512 needs kafka_security_protocol SASL_SSL or SASL_PLAINTEXT, not SSL",
        ),
        (
            dict(kafka_security_protocol="TLS"),
            "kafka_security_protocol=TLS: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            dict(kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_cafile="/etc/ca.pem"),
            "kafka_ssl_cafile given, but kafka_security_protocol=SASL_PLAINTEXT does not use TLS",
        ),
        (dict(kafka_ssl_keyfile="/etc/key.pem"), "kafka_ssl_keyfile needs kafka_ssl_certfile"),
        (dict(kafka_ssl_cafile="/nonexistent/ca.pem"), "kafka_ssl_cafile: no file /nonexistent/ca.pem"),
        (dict(kafka_sasl_password=""), "needs a non-empty password"),
    ],
)
def test_contradictory_or_missing_settings_are_a_config_error_that_names_them(fields, message):
    s = scram(**fields)
    with pytest.raises(ConfigError) as caught:
        s.kafka.client_config()
    assert message in str(caught.value)
    with pytest.raises(ConfigError):
        aiokafka_config(s)
    with pytest.raises(ConfigError):
        broker_credentials(s)


def test_sasl_ssl_without_a_ca_file_is_valid_and_trusts_the_system_cas():
    s = scram()
    cfg = s.kafka.client_config()
    assert cfg == {
        "bootstrap_servers": ["kafka.example:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "threadline",
        "sasl_plain_password": "pw",
        "ssl_check_hostname": True,
    }
    ctx = ssl_context(s)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 0  # the system's CAs


def test_the_password_is_a_secret_and_can_come_from_a_file(tmp_path, monkeypatch):
    assert "pw" not in repr(scram())
    secret_file = tmp_path / "password"
    secret_file.write_text("from-the-file\nsecond line ignored\n")
    monkeypatch.setenv("THREADLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_PASSWORD_FILE", str(secret_file))
    s = Settings()
    cfg = s.kafka.client_config()
    assert cfg["sasl_plain_password"] == "from-the-file"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-256"
    assert s.to_env()["THREADLINE_KAFKA_SASL_PASSWORD_FILE"] == str(secret_file)


def test_an_unreadable_password_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="kafka_sasl_password_file: cannot read"):
        scram(kafka_sasl_password=None, kafka_sasl_password_file=tmp_path / "missing").kafka.client_config()


def test_mtls_settings_reach_kafka_python_and_the_tls_context(pki):
    s = Settings(
        kafka_security_protocol="ssl",
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_certfile=str(pki.client_cert),
        kafka_ssl_keyfile=str(pki.client_key),
        kafka_ssl_check_hostname=False,
    )
    cfg = s.kafka.client_config()
    assert cfg["security_protocol"] == "SSL" and "sasl_mechanism" not in cfg
    assert (cfg["ssl_cafile"], cfg["ssl_certfile"], cfg["ssl_keyfile"]) == (
        str(pki.ca),
        str(pki.client_cert),
        str(pki.client_key),
    )
    assert cfg["ssl_check_hostname"] is False
    ctx = ssl_context(s)
    assert ctx.cert_store_stats()["x509_ca"] == 1  # only the given CA, not the system's
    assert not ctx.check_hostname and ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_key_that_does_not_match_the_certificate_is_refused_when_the_context_is_built(pki):
    s = Settings(
        kafka_security_protocol="SSL", kafka_ssl_certfile=str(pki.client_cert), kafka_ssl_keyfile=str(pki.server_key)
    )
    with pytest.raises(ssl.SSLError):
        ssl_context(s)


def test_plaintext_gives_no_tls_and_no_credentials():
    s = Settings()
    assert s.kafka.client_config() == {"bootstrap_servers": ["127.0.0.1:19092"]}
    assert ssl_context(s) is None
    assert aiokafka_config(s) == {"bootstrap_servers": ["127.0.0.1:19092"]}
    assert broker_credentials(s) is None


def test_aiokafka_gets_a_tls_context_instead_of_file_names(pki):
    cfg = aiokafka_config(scram(kafka_ssl_cafile=str(pki.ca)))
    assert not any(k.startswith("ssl_") and k != "ssl_context" for k in cfg)
    assert isinstance(cfg["ssl_context"], ssl.SSLContext)
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512" and cfg["sasl_plain_password"] == "pw"


def test_faust_gets_sasl_credentials_with_the_tls_context_on_sasl_ssl(pki):
    creds = broker_credentials(scram(kafka_ssl_cafile=str(pki.ca)))
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("threadline", "pw")
    assert auth["ssl_context"].cert_store_stats()["x509_ca"] == 1


def test_faust_gets_sasl_plaintext_credentials_without_tls():
    auth = credentials_to_aiokafka_auth(
        broker_credentials(scram(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN"))
    )
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "PLAIN"
    assert auth["ssl_context"] is None


def test_faust_gets_ssl_credentials_with_the_client_certificate_on_mtls(pki):
    creds = broker_credentials(
        Settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(pki.ca),
            kafka_ssl_certfile=str(pki.client_cert),
            kafka_ssl_keyfile=str(pki.client_key),
        )
    )
    assert isinstance(creds, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)


def test_the_faust_broker_url_lists_every_bootstrap_server_and_checks_the_settings():
    from streams.app import faust_broker

    assert faust_broker(Settings(kafka_bootstrap="a:9093,b:9093")) == "kafka://a:9093;kafka://b:9093"
    with pytest.raises(ConfigError, match="needs kafka_sasl_username"):
        faust_broker(scram(kafka_sasl_username=None))


BOOT_FAIL = Exception("KafkaTimeoutError: Unable to bootstrap from ['kafka.example:9093']")


def test_rejected_credentials_are_explained_as_a_config_error():
    logged = [
        "Bootstrap connection to bootstrap-0 failed: [Error 58] SaslAuthenticationFailedError: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    ]
    exc = explain_connection_failure(scram(), logged, BOOT_FAIL)
    assert isinstance(exc, ConfigError)
    assert "rejected the credentials: SASL SCRAM-SHA-512 as 'threadline' failed" in str(exc)
    assert "pw" not in str(exc)


def test_a_connection_closed_during_sasl_is_explained_as_rejected_credentials():
    logged = ["<KafkaConnection node_id=bootstrap-0>: Connection lost: KafkaConnectionError: socket disconnected"]
    exc = explain_connection_failure(scram(), logged, BOOT_FAIL)
    assert isinstance(exc, ConfigError)
    assert "most likely rejected the credentials" in str(exc) and "SASL SCRAM-SHA-512 as 'threadline'" in str(exc)
    refused = logged + ["Connection failed: KafkaConnectionError: [Errno 111] Connection refused"]
    assert isinstance(explain_connection_failure(scram(), refused, BOOT_FAIL), KafkaUnavailable)


@pytest.mark.parametrize(
    ("cafile", "hint"),
    [
        (None, "no THREADLINE_KAFKA_SSL_CAFILE is set, so only the system's CAs are trusted"),
        ("ca", "is not the CA that signed it"),
    ],
)
def test_an_untrusted_broker_certificate_is_explained(pki, cafile, hint):
    logged = [
        "Connection failed: KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)"
    ]
    exc = explain_connection_failure(scram(kafka_ssl_cafile=str(pki.ca) if cafile else None), logged, BOOT_FAIL)
    assert isinstance(exc, ConfigError)
    assert (
        "TLS verification of Kafka at kafka.example:9093 failed (self-signed certificate in certificate chain)"
        in str(exc)
    )
    assert hint in str(exc)


def test_a_certificate_for_another_host_is_explained():
    logged = [
        "Connection failed: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'kafka.example'. (_ssl.c:1006)"
    ]
    assert "does not name the address" in str(explain_connection_failure(scram(), logged, BOOT_FAIL))


def test_a_refused_client_certificate_is_explained():
    logged = [
        "<KafkaConnection node_id=bootstrap-0>: Connection lost: KafkaConnectionError: "
        "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)"
    ]
    exc = explain_connection_failure(Settings(kafka_security_protocol="SSL"), logged, BOOT_FAIL)
    assert isinstance(exc, ConfigError) and "set THREADLINE_KAFKA_SSL_CERTFILE and _KEYFILE" in str(exc)


def test_a_cluster_that_does_not_answer_is_unavailable_not_misconfigured():
    logged = ["Connection failed: KafkaConnectionError: [Errno 111] Connection refused"]
    exc = explain_connection_failure(Settings(), logged, BOOT_FAIL)
    assert isinstance(exc, KafkaUnavailable)
    assert "Kafka at 127.0.0.1:19092 did not answer" in str(exc) and "Connection refused" in str(exc)
