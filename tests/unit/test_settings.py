"""threadline/settings.py: THREADLINE_* environment variables over defaults, frozen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from threadline.errors import ConfigError

from threadline.settings import CodecKind, LogFormat, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("THREADLINE_"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_stack():
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.registry.codec is CodecKind.CONFLUENT
    assert s.home == Path(".threadline")
    assert s.postgres.dsn is None and s.embedded_pg


def test_threadline_env_vars_override_defaults(monkeypatch):
    monkeypatch.setenv("THREADLINE_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("THREADLINE_CODEC", "single-object")
    monkeypatch.setenv("THREADLINE_LOG_FORMAT", "json")
    monkeypatch.setenv("THREADLINE_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("THREADLINE_HOME", "/var/lib/threadline")
    s = Settings()
    assert s.kafka.bootstrap == "kafka-0:9092,kafka-1:9092"
    assert s.registry.codec is CodecKind.SINGLE_OBJECT
    assert s.log_format is LogFormat.JSON
    assert s.kafka.replication_factor == 3
    assert s.home == Path("/var/lib/threadline")
    assert s.kafka.client_config()["bootstrap_servers"] == ["kafka-0:9092", "kafka-1:9092"]


def test_variables_without_the_prefix_are_ignored(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "elsewhere:9092")
    assert Settings().kafka.bootstrap == "127.0.0.1:19092"


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka = s.kafka  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.kafka.bootstrap = "elsewhere:9092"  # type: ignore[misc]
    assert s.kafka.bootstrap == "127.0.0.1:19092"


def test_an_invalid_codec_is_rejected(monkeypatch):
    monkeypatch.setenv("THREADLINE_CODEC", "protobuf")
    with pytest.raises(ConfigError, match="THREADLINE_CODEC: Input should be 'confluent' or 'single-object'"):
        Settings()


def test_a_non_numeric_port_is_rejected(monkeypatch):
    monkeypatch.setenv("THREADLINE_PG_PORT", "five")
    with pytest.raises(ConfigError, match="THREADLINE_PG_PORT: Input should be a valid integer"):
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
    assert s.registry.port == 8081
    assert s.registry.root == "http://registry.internal:8081"


def test_kafka_client_config_carries_sasl_only_when_configured(monkeypatch):
    assert set(Settings().kafka.client_config()) == {"bootstrap_servers"}
    monkeypatch.setenv("THREADLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_USERNAME", "threadline")
    monkeypatch.setenv("THREADLINE_KAFKA_SASL_PASSWORD", "pw")
    cfg = Settings().kafka.client_config()
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("threadline", "pw")


def test_every_bad_setting_is_named_in_one_error_without_its_value(monkeypatch):
    monkeypatch.setenv("THREADLINE_KAFKA_SSL_CHECK_HOSTNAME", "perhaps")
    monkeypatch.setenv("THREADLINE_SLA_TARGETS", "sms")
    monkeypatch.setenv("THREADLINE_STREAMS_STORE", "redis")
    with pytest.raises(ConfigError) as info:
        Settings(api_tokens="admin=tok-do-not-print", retry_after_seconds=0)
    message = str(info.value)
    for name in (
        "THREADLINE_KAFKA_SSL_CHECK_HOSTNAME",
        "THREADLINE_SLA_TARGETS",
        "THREADLINE_STREAMS_STORE",
        "THREADLINE_RETRY_AFTER_SECONDS",
    ):
        assert name in message
    assert "tok-do-not-print" not in message and "perhaps" not in message


def test_settings_are_grouped_and_every_variable_keeps_its_name(monkeypatch):
    """The groups are how code reads settings; the variables (and the flat names of
    ``Settings(**flat)`` and ``model_copy(update=...)``) are the same as before the grouping."""
    for name, value in {
        "THREADLINE_KAFKA_BOOTSTRAP": "k:1",
        "THREADLINE_REPLICATION_FACTOR": "3",
        "THREADLINE_KAFKA_CONTROLLER_PORT": "7",
        "THREADLINE_PG_DSN": "postgresql://a@b/c",
        "THREADLINE_PG_PORT": "8",
        "THREADLINE_REGISTRY_URL": "http://r:1/apis/ccompat/v7",
        "THREADLINE_CODEC": "single-object",
        "THREADLINE_GATEWAY_PORT": "9",
        "THREADLINE_LANGUAGES": "en",
        "THREADLINE_API_TOKENS": "admin=t",
        "THREADLINE_PROJECTION_PREFIX": "p_",
        "THREADLINE_PRIVACY_KEY_CACHE_SECONDS": "2",
        "THREADLINE_STREAMS_STORE": "memory",
        "THREADLINE_STREAMS_SESSION_TIMEOUT": "11",
        "THREADLINE_STREAMS_IDLE_SECONDS": "4",
        "THREADLINE_STITCH_WINDOWS": "chat=60",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.kafka.bootstrap, s.kafka.replication_factor, s.stack.kafka_controller_port) == ("k:1", 3, 7)
    assert (s.postgres.dsn, s.stack.pg_port) == ("postgresql://a@b/c", 8)
    assert (s.registry.port, s.registry.codec) == (1, CodecKind.SINGLE_OBJECT)
    assert (s.endpoints.gateway_port, s.connectors.languages) == (9, "en")
    assert s.auth.api_tokens is not None and s.auth.api_tokens.get_secret_value() == "admin=t"
    assert (s.projections.prefix, s.privacy.key_cache_seconds) == ("p_", 2.0)
    assert (s.streams.store, s.streams.session_timeout, s.streams.idle_seconds) == ("memory", 11.0, 4)
    assert s.streams.stitch_windows == "chat=60"
    # The same names in, the same names out: to_env gives a child process these settings.
    env = s.to_env()
    assert env["THREADLINE_REPLICATION_FACTOR"] == "3" and env["THREADLINE_PROJECTION_PREFIX"] == "p_"
    assert env["THREADLINE_API_TOKENS"] == "admin=t" and env["THREADLINE_CODEC"] == "single-object"
    copy = s.model_copy(update={"pg_port": 9, "projection_prefix": "q_"})
    assert (copy.stack.pg_port, copy.projections.prefix, copy.kafka.bootstrap) == (9, "q_", "k:1")
    with pytest.raises(ConfigError, match="no such setting: pg_prot"):
        s.model_copy(update={"pg_prot": 9})
    with pytest.raises(ConfigError, match="THREADLINE_PG_PORT"):
        s.model_copy(update={"pg_port": "nine"})


def test_the_cli_names_a_bad_setting_and_exits_2(monkeypatch):
    from typer.testing import CliRunner

    from threadline.tools.cli import app

    monkeypatch.setenv("THREADLINE_PG_PORT", "five")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "THREADLINE_PG_PORT" in result.output and "Traceback" not in result.output


def test_a_secret_is_asked_for_by_its_name_in_its_group():
    from threadline.secrets import secret

    s = Settings(pg_password="pw", twilio_auth_token="tt")
    assert secret(s.postgres, "password") == "pw" and secret(s.connectors, "twilio_auth_token") == "tt"
    assert s.pg_secret("password", None) == "pw"
    # The flat name in a group (how the local stack once asked for it) is an error, not "unset".
    with pytest.raises(KeyError, match="pg_password"):
        secret(s.postgres, "pg_password")
    with pytest.raises(KeyError):
        s.pg_secret("pg_password", "threadline")
