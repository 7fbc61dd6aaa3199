"""Kafka clients configured the one way Threadline uses them.

The producer is idempotent with acks=all: a send is acknowledged only once every in-sync
replica has the record. Blocking code waits through ``BoundedProducer`` (a deadline on every
wait); the gateway produces with aiokafka in its event loop (``threadline/async_producer.py``).

Security settings (SASL, TLS, mTLS) come from ``Settings.kafka.client_config`` for kafka-python
and from ``aiokafka_config`` / ``broker_credentials`` for aiokafka and faust, which want an
``ssl.SSLContext`` instead of file names: ``ssl_context`` builds it the way kafka-python does.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from threadline.errors import ConfigError, KafkaUnavailable
from threadline.settings import Settings


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    cfg = dict(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_in_flight_requests_per_connection=5,
        retries=2**31 - 1,
        delivery_timeout_ms=30_000,
        request_timeout_ms=15_000,
        compression_type=None,
        client_id="threadline",
    )
    cfg.update(settings.kafka.client_config())
    cfg.update(overrides)
    with explained_connection_errors(settings):
        return KafkaProducer(**cfg)


class BoundedProducer:
    """A kafka-python producer for blocking code (importers, projectors' DLQ, CLI commands)
    whose every wait has a deadline (``THREADLINE_PRODUCE_DEADLINE_SECONDS``): ``send`` blocks
    (metadata, buffer space) no longer than that, and ``wait`` returns once Kafka acknowledged
    every given send or raises ``KafkaUnavailable`` when the deadline passed or a send failed.

    After a missed deadline the producer is closed without waiting and the next call makes a
    new one: an idempotent kafka-python producer can stay stuck after a broker outage (issue 11).
    What the caller does then is its choice: retry (projectors) or stop with an error (importers).
    """

    def __init__(self, factory: Callable[[], KafkaProducer], deadline: float, *, what: str = "Kafka"):
        self._factory, self.deadline, self.what = factory, deadline, what
        self._producer: KafkaProducer | None = None
        self.replaced = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> BoundedProducer:
        deadline = settings.connectors.produce_deadline_seconds
        return cls(
            lambda: make_producer(settings, max_block_ms=int(deadline * 1000), **overrides),
            deadline,
            what=f"Kafka at {settings.kafka.bootstrap}",
        )

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self._factory()
        return self._producer

    def send(self, topic: str, *, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None):
        """kafka-python's ``send``, at most the deadline long; its future for ``wait``."""
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers or [])
        except KafkaError as exc:
            self.reset()
            raise KafkaUnavailable(
                f"{self.what} did not take a record for {topic} within {self.deadline:g} s "
                f"(THREADLINE_PRODUCE_DEADLINE_SECONDS): {exc}"
            ) from exc

    def wait(self, futures: Iterable, what: str = "records") -> list:
        """Wait until Kafka acknowledged every future, at most the deadline; their metadata."""
        futures = list(futures)
        if not futures:
            return []
        started = time.monotonic()
        try:
            self.producer.flush(timeout=self.deadline)
        except KafkaError:  # KafkaTimeoutError: some are still unacknowledged, counted below
            pass
        unfinished = [f for f in futures if not f.is_done]
        failed = [f for f in futures if f.is_done and f.failed()]
        if unfinished or failed:
            self.reset()
            if unfinished:
                raise KafkaUnavailable(
                    f"{self.what} did not acknowledge {len(unfinished)} of {len(futures)} {what} within "
                    f"{self.deadline:g} s (THREADLINE_PRODUCE_DEADLINE_SECONDS; waited {time.monotonic() - started:.1f} s)"
                )
            raise KafkaUnavailable(f"{self.what} refused {len(failed)} of {len(futures)} {what}: {failed[0].exception}")
        return [f.value for f in futures]

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout=self.deadline if timeout is None else timeout)

    def reset(self) -> None:
        """Drop the producer without waiting for what it holds (the caller was told it is not
        acknowledged); the next send makes a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            self.replaced += 1
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer must not hide why it broke
                pass

    def close(self, timeout: float | None = None) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=self.deadline if timeout is None else min(timeout, self.deadline))


# What a client raises when it cannot bootstrap: KafkaTimeoutError (kafka-python 3), NoBrokersAvailable (2.x).
BOOTSTRAP_ERRORS = tuple(
    getattr(kafka_errors, n) for n in ("KafkaTimeoutError", "NoBrokersAvailable") if hasattr(kafka_errors, n)
)


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def explained_connection_errors(settings: Settings):
    """While a kafka-python client bootstraps: keep its retry warnings off the log and, when it
    gives up, raise one error that says why. ConfigError for what the settings must fix (the
    broker rejected the credentials, the broker's certificate is not trusted), KafkaUnavailable
    for a cluster that does not answer."""
    recorder = _Recorder()
    kafka_log = logging.getLogger("kafka")
    propagate = kafka_log.propagate
    kafka_log.addHandler(recorder)
    kafka_log.propagate = False
    try:
        yield
    except BOOTSTRAP_ERRORS as exc:
        raise explain_connection_failure(settings, recorder.messages, exc) from None
    finally:
        kafka_log.removeHandler(recorder)
        kafka_log.propagate = propagate


def explain_connection_failure(settings: Settings, messages: list[str], exc: Exception) -> Exception:
    """The error to show for a client that could not bootstrap, from what kafka-python logged (pure)."""
    where = settings.kafka.bootstrap
    text = "\n".join(messages)
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return ConfigError(
            f"Kafka at {where} rejected the credentials: SASL {settings.kafka.sasl_mechanism} as "
            f"{settings.kafka.sasl_username!r} failed; check THREADLINE_KAFKA_SASL_USERNAME, "
            "THREADLINE_KAFKA_SASL_PASSWORD (or _FILE) and THREADLINE_KAFKA_SASL_MECHANISM"
        )
    if "UnsupportedSaslMechanism" in text:
        return ConfigError(
            f"Kafka at {where} does not offer SASL {settings.kafka.sasl_mechanism} on this listener; "
            "set THREADLINE_KAFKA_SASL_MECHANISM to one it enables"
        )
    verify = re.search(r"certificate verify failed: ([^(\n]+)", text)
    if verify:
        reason = verify.group(1).strip()
        if "hostname" in reason.lower() or "IP address mismatch" in reason:
            hint = (
                "the certificate does not name the address in THREADLINE_KAFKA_BOOTSTRAP; use the name it "
                "was issued for (THREADLINE_KAFKA_SSL_CHECK_HOSTNAME=false only for tests)"
            )
        elif settings.kafka.ssl_cafile:
            hint = f"THREADLINE_KAFKA_SSL_CAFILE={settings.kafka.ssl_cafile} is not the CA that signed it"
        else:
            hint = (
                "no THREADLINE_KAFKA_SSL_CAFILE is set, so only the system's CAs are trusted; "
                "set it to the PEM file of the CA that signed the broker's certificate"
            )
        return ConfigError(f"TLS verification of Kafka at {where} failed ({reason}): {hint}")
    if "ALERT_BAD_CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
        hint = (
            f"THREADLINE_KAFKA_SSL_CERTFILE={settings.kafka.ssl_certfile} is not signed by a CA the broker trusts"
            if settings.kafka.ssl_certfile
            else "the listener wants a client certificate: set THREADLINE_KAFKA_SSL_CERTFILE and _KEYFILE"
        )
        return ConfigError(f"Kafka at {where} refused the TLS client certificate: {hint}")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return ConfigError(
            f"Kafka at {where} does not speak TLS on this port; "
            f"check THREADLINE_KAFKA_SECURITY_PROTOCOL={settings.kafka.security_protocol}"
        )
    if settings.kafka.sasl_mechanism and "socket disconnected" in text and "Connection refused" not in text:
        # The broker may close the connection after a failed SASL exchange instead of answering it.
        return ConfigError(
            f"Kafka at {where} most likely rejected the credentials: it closed the connection during "
            f"SASL {settings.kafka.sasl_mechanism} as {settings.kafka.sasl_username!r}; check "
            "THREADLINE_KAFKA_SASL_USERNAME, THREADLINE_KAFKA_SASL_PASSWORD (or _FILE) and THREADLINE_KAFKA_SASL_MECHANISM"
        )
    last = next((m for m in reversed(messages) if "Connection lost" in m or "Connection failed" in m), None)
    return KafkaUnavailable(f"Kafka at {where} did not answer ({exc})" + (f": {last}" if last else ""))


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of a SSL / SASL_SSL cluster (None otherwise): TLS 1.2 or later, the CA
    file or else the system's CAs, the client certificate for mTLS, hostname checking as set."""
    settings.kafka.check()
    if not settings.kafka.tls():
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = settings.kafka.ssl_check_hostname
    if settings.kafka.ssl_cafile:
        ctx.load_verify_locations(settings.kafka.ssl_cafile)
    else:
        ctx.load_default_certs()
    if settings.kafka.ssl_certfile:
        ctx.load_cert_chain(settings.kafka.ssl_certfile, settings.kafka.ssl_keyfile)
    return ctx


def aiokafka_config(settings: Settings) -> dict:
    """``kafka_client_config`` translated for aiokafka's clients (an SSL context, not files)."""
    cfg = {k: v for k, v in settings.kafka.client_config().items() if not k.startswith("ssl_")}
    context = ssl_context(settings)
    if context is not None:
        cfg["ssl_context"] = context
    return cfg


def broker_credentials(settings: Settings):
    """faust's ``broker_credentials``: SASLCredentials (with the TLS context on SASL_SSL),
    SSLCredentials on SSL, None on PLAINTEXT."""
    import faust

    settings.kafka.check()
    context = ssl_context(settings)
    if settings.kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka.sasl_username,
            password=settings.kafka.sasl_secret(),
            mechanism=settings.kafka.sasl_mechanism.upper(),
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def header_list(headers: dict[str, str] | None) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in (headers or {}).items()]
