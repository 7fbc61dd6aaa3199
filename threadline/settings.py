"""Typed, frozen settings read from the environment.

Every variable is prefixed ``THREADLINE_``; the defaults are the addresses of the local stack
that ``threadline up`` starts, so a fresh checkout needs no configuration at all.

    THREADLINE_HOME                 state folder of the local stack (.threadline)
    THREADLINE_KAFKA_BOOTSTRAP      bootstrap servers (127.0.0.1:19092)
    THREADLINE_REGISTRY_URL         Confluent-compatible registry (http://127.0.0.1:18081/apis/ccompat/v7)
    THREADLINE_CODEC                confluent | single-object
    THREADLINE_PG_DSN               a PostgreSQL DSN; unset = the embedded server of the local stack
    THREADLINE_LOG_FORMAT           json | console | auto (console on a terminal, JSON otherwise)
    THREADLINE_PROJECTION_PREFIX    prefix of the projection schemas ("" → support, sales, marketing)
    THREADLINE_OPS_HOST             where the worker and projector serve /metrics, /livez, /readyz
    THREADLINE_WORKER_OPS_PORT      (18002) and THREADLINE_PROJECTOR_OPS_PORT (18003)
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CodecKind(str, Enum):
    CONFLUENT = "confluent"
    SINGLE_OBJECT = "single-object"


class LogFormat(str, Enum):
    JSON = "json"
    CONSOLE = "console"
    AUTO = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", frozen=True, extra="ignore")

    home: Path = Field(default=Path(".threadline"), description="state folder of the local stack")

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.3.1"
    kafka_heap: str = "512m"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    replication_factor: int = 1

    codec: CodecKind = CodecKind.CONFLUENT
    registry_url: str = "http://127.0.0.1:18081/apis/ccompat/v7"

    pg_dsn: str | None = None
    pg_port: int = 15432

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 18000
    api_host: str = "127.0.0.1"
    api_port: int = 18001
    # Metrics (/metrics) and probes (/livez, /readyz): the gateway and the API serve them on their
    # own port; the worker and the projectors, which serve no HTTP otherwise, on these.
    ops_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    worker_ops_port: int = 18002
    projector_ops_port: int = 18003
    max_body_bytes: int = 1_000_000

    projection_prefix: str = Field(default="", description="prefix of the projection schemas (support → <prefix>support)")

    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    # Connectors (connectors/, docs/connectors.md). Each secret is given directly or as a file
    # (``*_file``: the first line of the file); unset = that connector answers 401 to everything.
    public_base_url: str | None = None  # the gateway's address as providers call it (Twilio signs the URL)
    twilio_auth_token: SecretStr | None = None
    twilio_auth_token_file: Path | None = None
    meta_app_secret: SecretStr | None = None
    meta_app_secret_file: Path | None = None
    meta_verify_token: SecretStr | None = None
    meta_verify_token_file: Path | None = None
    x_consumer_secret: SecretStr | None = None
    x_consumer_secret_file: Path | None = None
    shopify_webhook_secret: SecretStr | None = None
    shopify_webhook_secret_file: Path | None = None
    webhook_secret: SecretStr | None = None  # the generic JSON/email webhooks (X-Threadline-Signature)
    webhook_secret_file: Path | None = None
    default_phone_region: str = "IT"  # region of phone numbers written without a country code
    languages: str = "en,it,pl,nl,tr,de,fr,es"  # what language detection chooses from (ISO 639-1)
    fact_patterns: str | None = None  # JSON {"kind": "regex with one group"}; unset = built-in patterns
    cdr_timezone: str = "UTC"  # time zone of Asterisk CDR times (UTC when cdr.conf has usegmtime=yes)
    imap_host: str = "127.0.0.1"
    imap_port: int = 993
    imap_ssl: bool = True
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_password_file: Path | None = None
    imap_mailbox: str = "INBOX"

    @property
    def state_dir(self) -> Path:
        return self.home.resolve()

    @property
    def registry_port(self) -> int:
        from urllib.parse import urlparse

        return urlparse(self.registry_url).port or 80

    @property
    def registry_root(self) -> str:
        """The registry's base address without the ccompat path, for health checks."""
        from urllib.parse import urlparse

        u = urlparse(self.registry_url)
        return f"{u.scheme}://{u.netloc}"

    @property
    def embedded_pg(self) -> bool:
        return self.pg_dsn is None

    @property
    def effective_pg_dsn(self) -> str:
        if self.pg_dsn:
            return self.pg_dsn
        return f"postgresql://threadline@127.0.0.1:{self.pg_port}/threadline"

    def to_env(self) -> dict[str, str]:
        """These settings as THREADLINE_* variables, for child processes that must share them."""
        out = {}
        for name, value in self.model_dump(mode="json").items():
            if isinstance(getattr(self, name), SecretStr):
                value = getattr(self, name).get_secret_value()
            if value is not None:
                out[f"THREADLINE_{name.upper()}"] = str(value)
        out["THREADLINE_HOME"] = str(self.state_dir)
        return out

    def kafka_client_config(self) -> dict:
        """Security settings shared by every kafka-python client (empty on the local stack)."""
        cfg: dict = {"bootstrap_servers": self.kafka_bootstrap.split(",")}
        if self.kafka_security_protocol != "PLAINTEXT":
            cfg["security_protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            cfg["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            cfg["ssl_cafile"] = self.kafka_ssl_cafile
        return cfg


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
