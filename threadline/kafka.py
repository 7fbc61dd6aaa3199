"""Kafka clients configured the one way Threadline uses them.

The producer is idempotent with acks=all: a send is acknowledged only once every in-sync
replica has the record, which is what lets the gateway answer 2xx. ``send_async`` bridges
kafka-python's future to asyncio without blocking the event loop.
"""

from __future__ import annotations

import asyncio

from kafka import KafkaProducer
from kafka.errors import KafkaError

from threadline.errors import KafkaUnavailable
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
    cfg.update(settings.kafka_client_config())
    cfg.update(overrides)
    return KafkaProducer(**cfg)


def header_list(headers: dict[str, str] | None) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in (headers or {}).items()]


async def send_async(producer: KafkaProducer, topic: str, *, key: bytes | None, value: bytes,
                     headers: dict[str, str] | None = None):
    """Produce one record and wait for the broker's acknowledgment without blocking the loop."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future = loop.create_future()

    def done(result):
        loop.call_soon_threadsafe(lambda: waiter.done() or waiter.set_result(result))

    def failed(exc):
        loop.call_soon_threadsafe(lambda: waiter.done() or waiter.set_exception(
            KafkaUnavailable(f"{topic}: not acknowledged: {exc}")))

    try:
        future = producer.send(topic, key=key, value=value, headers=header_list(headers))
    except KafkaError as exc:
        raise KafkaUnavailable(f"{topic}: send failed: {exc}") from exc
    future.add_callback(done)
    future.add_errback(failed)
    return await waiter
