"""Typed, frozen settings read from the environment.

Every variable is prefixed ``THREADLINE_``; the defaults are the addresses of the local stack
that ``threadline up`` starts, so a fresh checkout needs no configuration at all.

    THREADLINE_HOME                 state folder of the local stack (.threadline)
    THREADLINE_KAFKA_BOOTSTRAP      bootstrap servers (127.0.0.1:19092)
    THREADLINE_REGISTRY_URL         Confluent-compatible registry (http://127.0.0.1:18081/apis/ccompat/v7)
    THREADLINE_CODEC                confluent | single-object
    THREADLINE_PG_DSN               a PostgreSQL DSN; unset = the embedded server of the local stack
    THREADLINE_PG_PASSWORD[_FILE]   password of the projectors' and migrations' role (added to the DSN)
    THREADLINE_PG_API_DSN           the read API's DSN (a role that can only read the projections);
                                    unset = the embedded server's read-only role, or THREADLINE_PG_DSN
    THREADLINE_PG_API_PASSWORD[_FILE]  password of the read API's role (added to its DSN)
    THREADLINE_LOG_FORMAT           json | console | auto (console on a terminal, JSON otherwise)
    THREADLINE_PROJECTION_PREFIX    prefix of the projection schemas ("" → support, sales, marketing)
    THREADLINE_OPS_HOST             where the worker and projector serve /metrics, /livez, /readyz
    THREADLINE_WORKER_OPS_PORT      (18002) and THREADLINE_PROJECTOR_OPS_PORT (18003)
    THREADLINE_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD[_FILE],
    THREADLINE_KAFKA_SSL_CAFILE, _SSL_CERTFILE, _SSL_KEYFILE, _SSL_CHECK_HOSTNAME
                                    a secured cluster: SASL/SCRAM or PLAIN, TLS, mTLS (docs/secured-kafka.md)
    THREADLINE_TWILIO_PUBLIC_URL, THREADLINE_TWILIO_VOICE_PUBLIC_URL, THREADLINE_TRUSTED_PROXIES
                                    the URL Twilio was given, or the proxies trusted to say it (docs/connectors.md)
    THREADLINE_CONTACT_TOKENS[_FILE] bearer tokens of POST /contacts, each bound to connector names
    THREADLINE_API_TOKENS[_FILE]    bearer tokens of the read API, each with its audiences (scopes)
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline.errors import ConfigError


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    # A secured cluster (docs/secured-kafka.md): checked by ``kafka_client_config`` with ConfigError.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: str | None = None  # PEM CA bundle; unset with SSL/SASL_SSL = the system's CAs
    kafka_ssl_certfile: str | None = None  # PEM client certificate (mTLS); may hold the key too
    kafka_ssl_keyfile: str | None = None  # PEM private key of the client certificate
    kafka_ssl_check_hostname: bool = True
    replication_factor: int = 1

    codec: CodecKind = CodecKind.CONFLUENT
    registry_url: str = "http://127.0.0.1:18081/apis/ccompat/v7"

    pg_dsn: str | None = None
    pg_port: int = 15432
    # Passwords of the two roles (scram-sha-256). Unset with the embedded server: random ones that
    # the local stack keeps in <home>/secrets/ (files only, never printed). Added to the DSNs.
    pg_password: SecretStr | None = None
    pg_password_file: Path | None = None
    pg_api_dsn: str | None = None  # the read API's role: SELECT on the projections, nothing else
    pg_api_password: SecretStr | None = None
    pg_api_password_file: Path | None = None

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
    # The gateway answers within this many seconds: Kafka's acknowledgment (2xx) or 503 +
    # Retry-After; a producer that misses it is replaced (threadline/async_producer.py).
    produce_deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    retry_after_seconds: int = Field(default=5, ge=1)

    projection_prefix: str = Field(
        default="", description="prefix of the projection schemas (support → <prefix>support)"
    )

    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    # Connectors (connectors/, docs/connectors.md). Each secret is given directly or as a file
    # (``*_file``: the first line of the file); unset = that connector answers 401 to everything.
    public_base_url: str | None = None  # the gateway's address as providers call it (Twilio signs the URL)
    # The URL each URL-signing connector was given at its provider (connectors/public_url.py):
    # the gateway checks Twilio's signature against it whatever path a proxy forwarded to.
    twilio_public_url: str | None = None  # e.g. https://hooks.example.org/twilio/sms
    twilio_voice_public_url: str | None = None
    # Addresses (IPs or CIDR networks, comma-separated) of the proxies whose X-Forwarded-Proto,
    # -Host and -Prefix headers rebuild that URL; from any other peer those headers are ignored.
    trusted_proxies: str = ""
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

    @field_validator("twilio_public_url", "twilio_voice_public_url")
    @classmethod
    def _public_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_public_url(value, str(info.field_name))

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_proxies(value, "trusted_proxies")
        return value

    # Crypto-shredding (schemas/privacy.py, schemas/keystore.py, docs/privacy.md). Unset master key:
    # contacts are written in the clear. Both keys: 32 random bytes as base64 or hex.
    privacy_master_key: SecretStr | None = None
    privacy_master_key_file: Path | None = None
    privacy_pseudonym_key: SecretStr | None = None
    privacy_pseudonym_key_file: Path | None = None
    privacy_key_cache_seconds: float = Field(default=30.0, ge=0)
    # THREADLINE_IDENTITY_BLOCKED, as the identity rules read it (streams/rules.py): with privacy on
    # the sealing writers give these values blocked pseudonyms (schemas/privacy.py, Pseudonymizer)
    identity_blocked: str = ""

    # Bearer tokens (threadline/auth.py): entries ``<name>[,<name>...]=<token>``, one per line
    # (``;`` between entries in a variable); ``*_file``: the whole file. Unset = every request 401.
    contact_tokens: SecretStr | None = None  # POST /contacts; names: the connectors a token may write
    contact_tokens_file: Path | None = None
    api_tokens: SecretStr | None = None  # the read API; names: support, sales, marketing, admin
    api_tokens_file: Path | None = None

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
        """The projectors' and migrations' connection string, with its password (never log it:
        ``pg_display`` is the same without the password)."""
        base = self.pg_dsn or f"postgresql://{PG_OWNER}@127.0.0.1:{self.pg_port}/threadline"
        return _with_password(base, self._pg_secret("pg_password", PG_OWNER))

    @property
    def effective_pg_api_dsn(self) -> str:
        """The read API's connection string: THREADLINE_PG_API_DSN; unset, the embedded server's
        read-only role, or else THREADLINE_PG_DSN as it is."""
        if self.pg_api_dsn:
            return _with_password(self.pg_api_dsn, self._pg_secret("pg_api_password", None))
        if self.pg_dsn:
            return self.effective_pg_dsn
        return _with_password(
            f"postgresql://{PG_READER}@127.0.0.1:{self.pg_port}/threadline",
            self._pg_secret("pg_api_password", PG_READER),
        )

    @property
    def pg_display(self) -> str:
        """Where PostgreSQL is, for messages and status: host, port, database, user; no password."""
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(self.pg_dsn or f"postgresql://{PG_OWNER}@127.0.0.1:{self.pg_port}/threadline")
        return f"postgresql://{d.get('user', '')}@{d.get('host', '')}:{d.get('port', '5432')}/{d.get('dbname', '')}"

    def _pg_secret(self, name: str, local_role: str | None) -> str | None:
        """A configured password (value or file); else, for a role of the embedded server, the
        local stack's generated one."""
        from threadline.secrets import secret

        configured = secret(self, name)
        if configured is not None or not self.embedded_pg or local_role is None:
            return configured
        return local_secret(self.state_dir, f"postgres-{local_role}")

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

    def kafka_sasl_secret(self) -> str | None:
        """The SASL password: THREADLINE_KAFKA_SASL_PASSWORD, or the first line of *_FILE."""
        from threadline.secrets import secret

        return secret(self, "kafka_sasl_password")

    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol.upper() in ("SSL", "SASL_SSL")

    def check_kafka_security(self) -> None:
        """ConfigError naming every kafka_* setting that is missing or contradicts another."""
        protocol, mechanism = self.kafka_security_protocol.upper(), (self.kafka_sasl_mechanism or "").upper()
        problems = []
        if protocol not in KAFKA_PROTOCOLS:
            problems.append(
                f"kafka_security_protocol={self.kafka_security_protocol}: expected one of {', '.join(KAFKA_PROTOCOLS)}"
            )
        sasl = protocol.startswith("SASL_")
        if mechanism and mechanism not in SASL_MECHANISMS:
            problems.append(
                f"kafka_sasl_mechanism={self.kafka_sasl_mechanism}: expected one of {', '.join(SASL_MECHANISMS)}"
            )
        if sasl and not mechanism:
            problems.append(f"kafka_security_protocol={protocol} needs kafka_sasl_mechanism")
        if mechanism and not sasl:
            problems.append(
                f"kafka_sasl_mechanism={mechanism} needs kafka_security_protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}"
            )
        if mechanism and not self.kafka_sasl_username:
            problems.append(f"kafka_sasl_mechanism={mechanism} needs kafka_sasl_username")
        if mechanism and self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
            problems.append(f"kafka_sasl_mechanism={mechanism} needs kafka_sasl_password or kafka_sasl_password_file")
        files = {k: getattr(self, k) for k in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")}
        if not self.kafka_tls() and protocol in KAFKA_PROTOCOLS and any(files.values()):
            given = ", ".join(k for k, v in files.items() if v)
            problems.append(f"{given} given, but kafka_security_protocol={protocol} does not use TLS (SSL or SASL_SSL)")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            problems.append("kafka_ssl_keyfile needs kafka_ssl_certfile (the client certificate it belongs to)")
        for key, path in files.items():
            if path and not Path(path).is_file():
                problems.append(f"{key}: no file {path}")
        if problems:
            raise ConfigError("Kafka settings: " + "; ".join(problems))
        if mechanism and not self.kafka_sasl_secret():
            raise ConfigError(f"Kafka settings: kafka_sasl_mechanism={mechanism} needs a non-empty password")

    def kafka_client_config(self) -> dict:
        """Connection and security settings shared by every kafka-python client (only the
        bootstrap servers on the local stack). Raises ConfigError on contradictory settings."""
        self.check_kafka_security()
        cfg: dict = {"bootstrap_servers": self.kafka_bootstrap.split(",")}
        protocol = self.kafka_security_protocol.upper()
        if protocol != "PLAINTEXT":
            cfg["security_protocol"] = protocol
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism.upper()
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            cfg["sasl_plain_password"] = self.kafka_sasl_secret()
        if self.kafka_tls():
            cfg["ssl_check_hostname"] = self.kafka_ssl_check_hostname
            for key in ("cafile", "certfile", "keyfile"):
                if getattr(self, f"kafka_ssl_{key}"):
                    cfg[f"ssl_{key}"] = getattr(self, f"kafka_ssl_{key}")
        return cfg


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def valid_host(netloc: str) -> bool:
    """A host name or bracketed IPv6 address with an optional port: no user info, no spaces."""
    return bool(_HOST.match(netloc))


def check_public_url(value: str | None, name: str) -> str | None:
    """``value`` as a connector's public URL: absolute http(s) with a host and no fragment. The
    query is dropped: the gateway always appends the request's own. ValueError naming ``name``."""
    if value is None or not value.strip():
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not valid_host(parts.netloc):
        raise ValueError(
            f"{name}: expected an absolute http(s) URL such as https://hooks.example.org/twilio/sms, got {value!r}"
        )
    if parts.fragment:
        raise ValueError(f"{name}: a URL with a #fragment is never what a provider calls")
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


def parse_proxies(value: str | None, name: str = "trusted_proxies") -> tuple[Network, ...]:
    """``"10.0.0.5, 10.1.0.0/16, ::1"`` -> networks; ValueError naming the bad entry."""
    out = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{name}: {item!r} is not an IP address or network (CIDR)") from None
    return tuple(out)


PG_OWNER = "threadline"  # the embedded server's role of the projectors and migrations (owns the database)
PG_READER = "threadline_reader"  # the embedded server's role of the read API (SELECT only)


def _with_password(dsn: str, password: str | None) -> str:
    if not password:
        return dsn
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, password=password)


def local_secret(state_dir: Path, name: str) -> str:
    """A random secret of the local stack, kept in ``<state>/secrets/<name>`` (mode 0600), made
    on first use. Two processes asking at once get the same value (exclusive create)."""
    import os
    import secrets

    folder = state_dir / "secrets"
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the other process is writing it
            value = path.read_text().strip()
            if value:
                return value
            import time

            time.sleep(0.01)
        raise ConfigError(f"{path} is empty") from None
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(24)
        f.write(value + "\n")
    return value


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
