"""Typed, frozen settings read from the environment: the one way in.

Every variable is prefixed ``THREADLINE_`` (the README's Settings tables list them all); a
secret ``X`` can be given as ``X_FILE`` instead (``threadline.secrets.secret``). The defaults
are the addresses of the local stack that ``threadline up`` starts, so a fresh checkout needs no
configuration at all. Code reads the settings by group, each a typed model of its own:

    settings.home, .log_format, .log_level   what every process shares
    settings.kafka        KafkaConnection     bootstrap servers, SASL, TLS, replication factor
    settings.registry     SchemaRegistry      the schema registry's URL and the wire codec
    settings.stack        LocalStack          the local broker's controller port, version, heap; PG port
    settings.postgres     PostgresConnection  the DSNs and passwords of the two database roles
    settings.endpoints    Endpoints           where the gateway, API, worker and projectors listen
    settings.connectors   ConnectorSettings   the gateway's limits, public URLs, proxies, provider secrets
    settings.auth         AuthTokens          bearer tokens of POST /contacts and of the read API
    settings.projections  Projections         the projection schemas' prefix
    settings.privacy      PrivacySettings     the master and pseudonym keys of crypto-shredding
    settings.streams      StreamsSettings     the worker's store and group timing; identity, stitching
                                              and SLA rules (streams/rules.py parses them)
    settings.bench        BenchSettings       how long ``threadline bench`` drives the gateway

``Settings(**flat)`` and ``settings.model_copy(update=flat)`` take the variables' own names
without the prefix (``kafka_bootstrap``, ``pg_port``, ``projection_prefix``); a bad value is a
ConfigError that names each variable and never prints a value.
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from functools import lru_cache
from typing import Any, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
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


class Group(BaseSettings):
    """One group of settings. Each field is read from ``THREADLINE_`` + the group's prefix + its
    name (or from the variable its alias names), and from ``*_FILE`` for the secrets that have one
    (``threadline.secrets.secret``). Groups are frozen; ``Settings`` holds one of each."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_", frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """The group's variables without ``THREADLINE_``, lower case -> the field each one sets."""
        prefix = str(cls.model_config.get("env_prefix", "")).lower().removeprefix("threadline_")
        out = {}
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            out[alias.lower().removeprefix("threadline_") if isinstance(alias, str) else prefix + name] = name
        return out


class General(Group):
    """What every process shares: its state folder and its logs."""

    home: Path = Field(default=Path(".threadline"), description="state folder of the local stack")
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"


class KafkaConnection(Group):
    """How every Kafka client connects: bootstrap servers and a secured cluster's SASL and TLS
    (docs/secured-kafka.md), checked by ``check`` with ConfigError."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_KAFKA_")

    bootstrap: str = "127.0.0.1:19092"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: str | None = None  # PEM CA bundle; unset with SSL/SASL_SSL = the system's CAs
    ssl_certfile: str | None = None  # PEM client certificate (mTLS); may hold the key too
    ssl_keyfile: str | None = None  # PEM private key of the client certificate
    ssl_check_hostname: bool = True
    replication_factor: int = Field(default=1, validation_alias="THREADLINE_REPLICATION_FACTOR")

    def sasl_secret(self) -> str | None:
        """The SASL password: THREADLINE_KAFKA_SASL_PASSWORD, or the first line of *_FILE."""
        from threadline.secrets import secret

        return secret(self, "sasl_password")

    def tls(self) -> bool:
        return self.security_protocol.upper() in ("SSL", "SASL_SSL")

    def check(self) -> None:
        """ConfigError naming every kafka_* setting that is missing or contradicts another."""
        protocol, mechanism = self.security_protocol.upper(), (self.sasl_mechanism or "").upper()
        problems = []
        if protocol not in KAFKA_PROTOCOLS:
            problems.append(
                f"kafka_security_protocol={self.security_protocol}: expected one of {', '.join(KAFKA_PROTOCOLS)}"
            )
        sasl = protocol.startswith("SASL_")
        if mechanism and mechanism not in SASL_MECHANISMS:
            problems.append(f"kafka_sasl_mechanism={self.sasl_mechanism}: expected one of {', '.join(SASL_MECHANISMS)}")
        if sasl and not mechanism:
            problems.append(f"kafka_security_protocol={protocol} needs kafka_sasl_mechanism")
        if mechanism and not sasl:
            problems.append(
                f"kafka_sasl_mechanism={mechanism} needs kafka_security_protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}"
            )
        if mechanism and not self.sasl_username:
            problems.append(f"kafka_sasl_mechanism={mechanism} needs kafka_sasl_username")
        if mechanism and self.sasl_password is None and self.sasl_password_file is None:
            problems.append(f"kafka_sasl_mechanism={mechanism} needs kafka_sasl_password or kafka_sasl_password_file")
        files = {f"kafka_ssl_{k}": getattr(self, f"ssl_{k}") for k in ("cafile", "certfile", "keyfile")}
        if not self.tls() and protocol in KAFKA_PROTOCOLS and any(files.values()):
            given = ", ".join(k for k, v in files.items() if v)
            problems.append(f"{given} given, but kafka_security_protocol={protocol} does not use TLS (SSL or SASL_SSL)")
        if self.ssl_keyfile and not self.ssl_certfile:
            problems.append("kafka_ssl_keyfile needs kafka_ssl_certfile (the client certificate it belongs to)")
        for key, path in files.items():
            if path and not Path(path).is_file():
                problems.append(f"{key}: no file {path}")
        if problems:
            raise ConfigError("Kafka settings: " + "; ".join(problems))
        if mechanism and not self.sasl_secret():
            raise ConfigError(f"Kafka settings: kafka_sasl_mechanism={mechanism} needs a non-empty password")

    def client_config(self) -> dict:
        """Connection and security settings shared by every kafka-python client (only the
        bootstrap servers on the local stack). Raises ConfigError on contradictory settings."""
        self.check()
        cfg: dict = {"bootstrap_servers": self.bootstrap.split(",")}
        protocol = self.security_protocol.upper()
        if protocol != "PLAINTEXT":
            cfg["security_protocol"] = protocol
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism.upper()
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_secret()
        if self.tls():
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            for key in ("cafile", "certfile", "keyfile"):
                if getattr(self, f"ssl_{key}"):
                    cfg[f"ssl_{key}"] = getattr(self, f"ssl_{key}")
        return cfg


class SchemaRegistry(Group):
    """The Confluent-compatible schema registry and the wire format of records."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_REGISTRY_")

    url: str = "http://127.0.0.1:18081/apis/ccompat/v7"
    codec: CodecKind = Field(default=CodecKind.CONFLUENT, validation_alias="THREADLINE_CODEC")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def root(self) -> str:
        """The registry's base address without the ccompat path, for health checks."""
        u = urlsplit(self.url)
        return f"{u.scheme}://{u.netloc}"


class LocalStack(Group):
    """The stack ``threadline up`` runs on this machine: the broker's controller, versions, heap,
    and the embedded PostgreSQL's port."""

    kafka_controller_port: int = 19093
    kafka_version: str = "4.3.1"
    kafka_heap: str = "512m"
    pg_port: int = 15432


class PostgresConnection(Group):
    """PostgreSQL: the projectors' and migrations' role, the read API's role (SELECT on the
    projections, nothing else) and the key store's role (the gateway, importers and worker:
    SELECT, INSERT on privacy.data_keys, nothing else). Unset DSNs = the embedded server
    of the local stack; unset passwords there = random ones kept in <home>/secrets/ (files only,
    never printed)."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_PG_")

    dsn: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    api_dsn: str | None = None
    api_password: SecretStr | None = None
    api_password_file: Path | None = None
    keystore_dsn: str | None = None
    keystore_password: SecretStr | None = None
    keystore_password_file: Path | None = None


class Endpoints(Group):
    """Where each process listens. The gateway and the API serve metrics (/metrics) and probes
    (/livez, /readyz) on their own port; the worker and the projectors, which serve no HTTP
    otherwise, on the ops ports."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 18000
    api_host: str = "127.0.0.1"
    api_port: int = 18001
    # The read API's processes (uvicorn workers sharing the port) and each one's PostgreSQL pool:
    # a process answers ~one request per ms of CPU, so on N cores N workers; each request holds a
    # connection for its queries only, so a pool as large as the concurrent requests expected of
    # one process never makes one wait (a wait past 1 s answers 503).
    api_workers: int = Field(default=1, ge=1, le=64)
    api_pool_size: int = Field(default=16, ge=1, le=256)
    ops_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    worker_ops_port: int = 18002
    projector_ops_port: int = 18003


class ConnectorSettings(Group):
    """The gateway and the connectors (connectors/, docs/connectors.md). Each secret is given
    directly or as a file (``*_file``: the first line of the file); unset = that connector
    answers 401 to everything."""

    max_body_bytes: int = 1_000_000
    # The gateway answers within this many seconds: Kafka's acknowledgment (2xx) or 503 +
    # Retry-After; a producer that misses it is replaced (threadline/async_producer.py).
    produce_deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    retry_after_seconds: int = Field(default=5, ge=1)
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


class AuthTokens(Group):
    """Bearer tokens (threadline/auth.py): entries ``<name>[,<name>...]=<token>``, one per line
    (``;`` between entries in a variable); ``*_file``: the whole file. Unset = every request 401."""

    contact_tokens: SecretStr | None = None  # POST /contacts; names: the connectors a token may write
    contact_tokens_file: Path | None = None
    api_tokens: SecretStr | None = None  # the read API; names: support, sales, marketing, admin
    api_tokens_file: Path | None = None


class Projections(Group):
    """The read models' home: the prefix of their schemas ("" -> support, sales, marketing)."""

    prefix: str = Field(
        default="",
        validation_alias="THREADLINE_PROJECTION_PREFIX",
        description="prefix of the projection schemas (support -> <prefix>support)",
    )
    # a live read model's batch waits this long for more records after its first ones
    # (projectors/engine/runner.py, gather); the contacts projection behind /contacts never waits
    batch_wait_ms: int = Field(default=100, ge=0, le=10_000, validation_alias="THREADLINE_PROJECTION_BATCH_WAIT_MS")


class PrivacySettings(Group):
    """Crypto-shredding (schemas/privacy.py, schemas/keystore.py, docs/privacy.md). Unset master
    key: contacts are written in the clear. Both keys: 32 random bytes as base64 or hex."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_PRIVACY_")

    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None
    key_cache_seconds: float = Field(default=30.0, ge=0)


_PAIRS = re.compile(r"^\s*(?:[\w.-]+\s*=\s*\d+\s*(?:,\s*[\w.-]+\s*=\s*\d+\s*)*,?)?\s*$")


class StreamsSettings(Group):
    """The stream worker: its table store, group timing, and the rules of identity, stitching and
    SLA (streams/rules.py turns these into its rule dataclasses; unset = the rule's default)."""

    store: str = Field(default="", validation_alias="THREADLINE_STREAMS_STORE")  # memory | rocksdb | "" (auto)
    session_timeout: float = Field(default=30.0, gt=0, validation_alias="THREADLINE_STREAMS_SESSION_TIMEOUT")
    idle_seconds: int | None = Field(default=None, ge=0, validation_alias="THREADLINE_STREAMS_IDLE_SECONDS")
    idle_hold_seconds: int | None = Field(default=None, ge=0, validation_alias="THREADLINE_STREAMS_IDLE_HOLD_SECONDS")
    identity_hint_links: bool = False
    identity_link_facts: str = ""
    identity_limits: str = ""  # kind=n,...
    identity_priority: str = ""
    # The gateway and importers read it too: with privacy on they give these values blocked
    # pseudonyms (schemas/privacy.py, Pseudonymizer) that the identity rules refuse.
    identity_blocked: str = ""
    stitch_windows: str = ""  # channel=seconds,...
    stitch_reopen_seconds: int | None = Field(default=None, ge=0)
    stitch_retention_seconds: int | None = Field(default=None, ge=0)
    sla_targets: str = ""  # channel=seconds,...
    sla_resolution_seconds: int | None = Field(default=None, ge=0)
    sla_business_hours: str | None = None  # e.g. "Europe/Rome mon-fri 09:00-18:00"
    sla_timer_grace_seconds: int | None = Field(default=None, ge=0)

    @field_validator("identity_limits", "stitch_windows", "sla_targets")
    @classmethod
    def _pairs(cls, value: str, info: ValidationInfo) -> str:
        if not _PAIRS.match(value):
            raise ValueError(f"expected name=seconds pairs separated by commas, got {value!r}")
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if value.lower() not in ("", "memory", "rocksdb"):
            raise ValueError(f"expected memory or rocksdb, got {value!r}")
        return value.lower()


class BenchSettings(Group):
    """``threadline bench``: how long the gateway's measured wrk run lasts."""

    wrk_seconds: int = Field(default=15, ge=1, validation_alias="THREADLINE_BENCH_WRK_SECONDS")


GROUPS: dict[str, type[Group]] = {
    "kafka": KafkaConnection,
    "registry": SchemaRegistry,
    "stack": LocalStack,
    "postgres": PostgresConnection,
    "endpoints": Endpoints,
    "connectors": ConnectorSettings,
    "auth": AuthTokens,
    "projections": Projections,
    "privacy": PrivacySettings,
    "streams": StreamsSettings,
    "bench": BenchSettings,
}


@lru_cache(maxsize=1)
def flat_index() -> dict[str, tuple[str | None, str]]:
    """Every setting by its flat name (the variable without ``THREADLINE_``, lower case) ->
    (group attribute or None for the general ones, field)."""
    out: dict[str, tuple[str | None, str]] = {flat: (None, f) for flat, f in General.flat_names().items()}
    for attr, group in GROUPS.items():
        for flat, f in group.flat_names().items():
            assert flat not in out, f"two settings read THREADLINE_{flat.upper()}"
            out[flat] = (attr, f)
    return out


def _flat_name(group: type[Group], loc: tuple) -> str:
    key = str(loc[0]) if loc else ""
    names = group.flat_names()
    for flat, f in names.items():
        if key in (f, f"THREADLINE_{flat.upper()}", f"threadline_{flat}"):
            return flat
    return key.lower().removeprefix("threadline_")


class Settings(BaseModel):
    """Every setting of Threadline, by group, read from the environment (``THREADLINE_*`` and
    ``*_FILE`` secrets): the one way in.

    ``Settings(**flat)`` and ``settings.model_copy(update=flat)`` take settings by their flat
    names, the variables without ``THREADLINE_`` in lower case (``kafka_bootstrap``, ``pg_port``);
    everything not given is read from the environment. Code reads them by group:
    ``settings.kafka.bootstrap``, ``settings.stack.pg_port``, ``settings.connectors.languages``."""

    model_config = ConfigDict(frozen=True)

    home: Path = General.model_fields["home"].default
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    registry: SchemaRegistry = Field(default_factory=SchemaRegistry)
    stack: LocalStack = Field(default_factory=LocalStack)
    postgres: PostgresConnection = Field(default_factory=PostgresConnection)
    endpoints: Endpoints = Field(default_factory=Endpoints)
    connectors: ConnectorSettings = Field(default_factory=ConnectorSettings)
    auth: AuthTokens = Field(default_factory=AuthTokens)
    projections: Projections = Field(default_factory=Projections)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    bench: BenchSettings = Field(default_factory=BenchSettings)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        """Flat names -> groups; each group reads what it was not given from the environment.
        ConfigError names each bad setting as its variable is spelled, never its value."""
        if not isinstance(data, dict):
            return data
        index = flat_index()
        given: dict[str | None, dict[str, Any]] = {}
        built: dict[str, Any] = {}
        for key, value in data.items():
            if key in GROUPS and isinstance(value, GROUPS[key]):
                built[key] = value
            elif key in index:
                attr, f = index[key]
                given.setdefault(attr, {})[f] = value
        out: dict[str, Any] = {}
        problems: list[str] = []
        steps: list[tuple[str | None, type[Group]]] = [(None, General), *GROUPS.items()]
        for attr, group in steps:
            if attr in built and attr not in given:
                out[str(attr)] = built[str(attr)]
                continue
            try:
                made = group(**given.get(attr, {}))
            except ValidationError as exc:
                problems += [
                    f"THREADLINE_{_flat_name(group, err['loc']).upper()}: {err['msg'].removeprefix('Value error, ')}"
                    for err in exc.errors(include_input=False)
                ]
                continue
            if attr is None:
                out.update({f: getattr(made, f) for f in General.model_fields})
            else:
                out[attr] = made
        if problems:
            # ConfigError, not ValueError: pydantic would print the given values (secrets among them).
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return out

    @classmethod
    def flat_defaults(cls) -> dict[str, Any]:
        """Every setting's default by its flat name (for deployment files that must agree)."""
        out = {}
        for flat, (attr, f) in flat_index().items():
            model = General if attr is None else GROUPS[attr]
            out[flat] = model.model_fields[f].default
        return out

    def flat(self) -> dict[str, Any]:
        """These settings by their flat names, as typed values (secrets stay SecretStr)."""
        return {
            flat: getattr(self if attr is None else getattr(self, attr), f) for flat, (attr, f) in flat_index().items()
        }

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy with ``update`` (flat names) applied and validated like the environment's values."""
        if not update:
            return super().model_copy(deep=deep)
        unknown = sorted(set(update) - set(flat_index()))
        if unknown:
            raise ConfigError(f"no such setting: {', '.join(unknown)}")
        return type(self)(**{**self.flat(), **update})

    @property
    def state_dir(self) -> Path:
        return self.home.resolve()

    @property
    def embedded_pg(self) -> bool:
        return self.postgres.dsn is None

    @property
    def effective_pg_dsn(self) -> str:
        """The projectors' and migrations' connection string, with its password (never log it:
        ``pg_display`` is the same without the password)."""
        base = self.postgres.dsn or f"postgresql://{PG_OWNER}@127.0.0.1:{self.stack.pg_port}/threadline"
        return _with_password(base, self.pg_secret("password", PG_OWNER))

    @property
    def effective_pg_api_dsn(self) -> str:
        """The read API's connection string: THREADLINE_PG_API_DSN; unset, the embedded server's
        read-only role, or else THREADLINE_PG_DSN as it is."""
        return self._role_dsn(self.postgres.api_dsn, "api_password", PG_READER)

    @property
    def effective_keystore_dsn(self) -> str:
        """The key store's connection string (privacy.data_keys: the gateway, importers and worker
        seal under it, the projectors open with it): THREADLINE_PG_KEYSTORE_DSN; unset, the
        embedded server's key-store role, or else THREADLINE_PG_DSN as it is."""
        return self._role_dsn(self.postgres.keystore_dsn, "keystore_password", PG_KEYSTORE)

    def _role_dsn(self, dsn: str | None, password: str, role: str) -> str:
        """A component's connection string: ``dsn`` with the ``password`` secret of the postgres
        group added; unset, THREADLINE_PG_DSN as it is when that is set, or else the embedded
        server's ``role`` with its password."""
        if dsn:
            return _with_password(dsn, self.pg_secret(password, None))
        if self.postgres.dsn:
            return self.effective_pg_dsn
        return _with_password(
            f"postgresql://{role}@127.0.0.1:{self.stack.pg_port}/threadline", self.pg_secret(password, role)
        )

    @property
    def pg_display(self) -> str:
        """Where PostgreSQL is, for messages and status: host, port, database, user; no password."""
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(self.postgres.dsn or f"postgresql://{PG_OWNER}@127.0.0.1:{self.stack.pg_port}/threadline")
        return f"postgresql://{d.get('user', '')}@{d.get('host', '')}:{d.get('port', '5432')}/{d.get('dbname', '')}"

    def pg_secret(self, name: str, local_role: str | None) -> str | None:
        """A configured password of ``postgres.<name>`` (value or file); else, for a role of the
        embedded server, the local stack's generated one."""
        from threadline.secrets import secret

        configured = secret(self.postgres, name)
        if configured is not None or not self.embedded_pg or local_role is None:
            return configured
        return local_secret(self.state_dir, f"postgres-{local_role}")

    def to_env(self) -> dict[str, str]:
        """These settings as THREADLINE_* variables, for child processes that must share them."""
        out = {}
        for flat, value in self.flat().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, Enum):
                value = value.value
            if value is not None:
                out[f"THREADLINE_{flat.upper()}"] = str(value)
        out["THREADLINE_HOME"] = str(self.state_dir)
        return out


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
PG_KEYSTORE = "threadline_keystore"  # the embedded server's role of the key store (privacy.data_keys only)


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
