"""threadline/settings.py: THREADLINE_* environment variables over defaults, frozen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from threadline.settings import CodecKind, LogFormat, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("THREADLINE_"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_stack():
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.codec is CodecKind.CONFLUENT
    assert s.home == Path(".threadline")
    assert s.pg_dsn is None and s.embedded_pg


def test_threadline_env_vars_override_defaults(monkeypatch):
    monkeypatch.setenv("THREADLINE_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("THREADLINE_CODEC", "single-object")
    monkeypatch.setenv("THREADLINE_LOG_FORMAT", "json")
    monkeypatch.setenv("THREADLINE_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("THREADLINE_HOME", "/var/lib/threadline")
    s = Settings()
    assert s.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"
    assert s.codec is CodecKind.SINGLE_OBJECT
    assert s.log_format is LogFormat.JSON
    assert s.replication_factor == 3
    assert s.home == Path("/var/lib/threadline")
    assert s.kafka_client_config()["bootstrap_servers"] == ["kafka-0:9092", "kafka-1:9092"]


def test_variables_without_the_prefix_are_ignored(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "elsewhere:9092")
    assert Settings().kafka_bootstrap == "127.0.0.1:19092"


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka_bootstrap = "elsewhere:9092"
    assert s.kafka_bootstrap == "127.0.0.1:19092"


def test_an_invalid_codec_is_rejected(monkeypatch):
    monkeypatch.setenv("THREADLINE_CODEC", "protobuf")
    with pytest.raises(ValidationError, match="codec"):
        Settings()


def test_a_non_numeric_port_is_rejected(monkeypatch):
    monkeypatch.setenv("THREADLINE_PG_PORT", "five")
    with pytest.raises(ValidationError, match="pg_port"):
        Settings()


def test_effective_pg_dsn_is_the_given_dsn(monkeypatch):
    monkeypatch.setenv("THREADLINE_PG_DSN", "postgresql://app:secret@db.internal:5432/threadline")
    s = Settings()
    assert s.effective_pg_dsn == "postgresql://app:secret@db.internal:5432/threadline"
    assert not s.embedded_pg


def test_effective_pg_dsn_without_a_dsn_is_the_embedded_server_on_pg_port_with_a_generated_password(
    monkeypatch, tmp_path
):
    from psycopg.conninfo import conninfo_to_dict

    monkeypatch.setenv("THREADLINE_PG_PORT", "25432")
    monkeypatch.setenv("THREADLINE_HOME", str(tmp_path))
    s = Settings()
    d = conninfo_to_dict(s.effective_pg_dsn)
    kept = tmp_path / "secrets" / "postgres-threadline"
    assert (d["user"], d["host"], d["port"], d["dbname"]) == ("threadline", "127.0.0.1", "25432", "threadline")
    assert d["password"] == kept.read_text().strip() and len(d["password"]) >= 24
    assert kept.stat().st_mode & 0o777 == 0o600
    assert Settings().effective_pg_dsn == s.effective_pg_dsn  # made once, then read
    assert s.pg_display == "postgresql://threadline@127.0.0.1:25432/threadline"  # no password


def test_the_read_api_has_its_own_role_and_password(monkeypatch, tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    monkeypatch.setenv("THREADLINE_HOME", str(tmp_path))
    reader = conninfo_to_dict(Settings().effective_pg_api_dsn)
    assert reader["user"] == "threadline_reader"
    assert reader["password"] == (tmp_path / "secrets" / "postgres-threadline_reader").read_text().strip()
    assert reader["password"] != conninfo_to_dict(Settings().effective_pg_dsn)["password"]

    (tmp_path / "api-pw").write_text("from-a-file\n")
    monkeypatch.setenv("THREADLINE_PG_API_DSN", "postgresql://reader@db.internal/threadline")
    monkeypatch.setenv("THREADLINE_PG_API_PASSWORD_FILE", str(tmp_path / "api-pw"))
    monkeypatch.setenv("THREADLINE_PG_DSN", "postgresql://owner@db.internal/threadline")
    monkeypatch.setenv("THREADLINE_PG_PASSWORD", "owner-pw")
    s = Settings()
    assert conninfo_to_dict(s.effective_pg_api_dsn)["password"] == "from-a-file"
    assert conninfo_to_dict(s.effective_pg_dsn)["password"] == "owner-pw"
    assert "owner-pw" not in repr(s) and "owner-pw" not in s.pg_display


def test_without_an_api_dsn_an_external_server_is_read_with_the_given_dsn(monkeypatch):
    monkeypatch.setenv("THREADLINE_PG_DSN", "postgresql://app:secret@db.internal:5432/threadline")
    assert Settings().effective_pg_api_dsn == "postgresql://app:secret@db.internal:5432/threadline"


def test_registry_port_and_root_come_from_the_registry_url(monkeypatch):
    monkeypatch.setenv("THREADLINE_REGISTRY_URL", "http://registry.internal:8081/apis/ccompat/v7")
    s = Settings()
    assert s.registry_port == 8081
    assert s.registry_root == "http://registry.internal:8081"


def test_kafka_client_config_carries_sasl_only_when_configured(monkeypatch):
    assert set(Settings().kafka_client_config()) == {"bootstrap_servers"}
    monkeypatch.setenv("THREADLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_USERNAME", "threadline")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_PASSWORD", "pw")
    cfg = Settings().kafka_client_config()
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("threadline", "pw")
