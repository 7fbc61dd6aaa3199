"""The gateway's producer: aiokafka in the event loop, a deadline on every send, replaced when it
misses one.

Why not kafka-python here: its producer runs a sender thread, every acknowledgment hops from that
thread to the loop, and with ``enable_idempotence=True`` it wedged after a broker pause of ~40 s
(79 of 79 later sends never completed; measured, issue 11). aiokafka runs in the gateway's own
event loop, so a send is a coroutine that ``asyncio.timeout`` can bound, and a producer whose
connection hangs can be dropped and a fresh one started without restarting the process.

Rules:

- every ``send`` answers within ``deadline`` seconds (+ at most ``SWEEP_SECONDS``): the record's
  metadata once the broker acknowledged it (acks=all), or ``KafkaUnavailable`` (the caller
  answers 503 + Retry-After). The deadlines of the sends in flight are checked together, every
  ``SWEEP_SECONDS`` while any is in flight, by one timer: a timer per send (``asyncio.timeout``)
  cost ~4 µs on uvloop, a twentieth of the gateway's CPU per request beside the rest of it;
- a producer that missed a deadline, or could not start, is retired (stopped in the background,
  bounded) and the next send starts a new one; only one start runs at a time;
- not idempotent: a send that missed its deadline may still land, and the provider retries, so a
  contact can be written twice. That is harmless by design (deterministic event ids, idempotent
  consumers: invariant 3), while an idempotent producer's sequence state is what wedged;
- ``probe()`` asks the cluster for metadata on the producer the gateway actually uses, so
  /readyz says what the next send will meet.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from functools import lru_cache

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from threadline.errors import KafkaUnavailable
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.producer")

STOP_LIMIT = 5.0  # seconds a retired or closing producer may take to stop
SWEEP_SECONDS = 0.05  # how often the deadlines of the sends in flight are checked (at most)


class _InFlight:
    """A send in flight: the task that awaits it, its deadline, and whether the sweep cancelled it."""

    __slots__ = ("task", "until", "expired")

    def __init__(self, task: asyncio.Task, until: float):
        self.task, self.until, self.expired = task, until, False


_M = 0x5BD1E995  # MurmurHash2's mixing constant
_MASK = 0xFFFFFFFF


@lru_cache(maxsize=256)
def _words(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}I")


def murmur2_fast(data: bytes) -> int:
    """aiokafka's ``murmur2`` (Java's ``Utils.murmur2``: the hash every Kafka client partitions
    keys with), the same value in about half the time (2.7 against 5.3 µs for a 34-byte key): the
    4-byte blocks read in one ``unpack`` and each step masked once instead of after every operation."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in _words(length >> 2).unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


@lru_cache(maxsize=65536)
def _key_hash(key: bytes) -> int:
    return murmur2_fast(key) & 0x7FFFFFFF


def keyed_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner (Java's murmur2: a key lands where every other client puts
    it), with each key's hash remembered (murmur2 is pure Python there, and the same customers'
    keys come back) and computed by ``murmur2_fast``."""
    if key is None:
        return DefaultPartitioner()(key, all_partitions, available)
    return all_partitions[_key_hash(key) % len(all_partitions)]


def aiokafka_producer_config(settings: Settings) -> dict:
    from threadline.kafka import aiokafka_config

    return dict(
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=int(settings.connectors.produce_deadline_seconds * 1000) + 5_000,
        retry_backoff_ms=200,
        metadata_max_age_ms=60_000,
        client_id="threadline-gateway",
        partitioner=keyed_partitioner,
        **aiokafka_config(settings),
    )


class DeadlineProducer:
    def __init__(
        self,
        settings: Settings,
        *,
        deadline: float | None = None,
        factory: Callable[[], AIOKafkaProducer] | None = None,
    ):
        self.deadline = deadline if deadline is not None else settings.connectors.produce_deadline_seconds
        self._factory = factory or (lambda: AIOKafkaProducer(**aiokafka_producer_config(settings)))
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self.replaced = 0  # producers retired after a missed deadline or a failed start
        self.last_error = ""
        self._in_flight: set[_InFlight] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tick = min(SWEEP_SECONDS, self.deadline / 4)

    async def start(self) -> None:
        """Start eagerly (the gateway's start-up); a broker that is down is not fatal here: the
        first send tries again and answers 503 until Kafka is back."""
        try:
            await self._current(time.monotonic() + self.deadline)
        except KafkaUnavailable as exc:
            log.warning("producer_not_started", error=str(exc))

    async def _current(self, until: float) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        try:
            await asyncio.wait_for(self._starting.acquire(), max(0.0, until - time.monotonic()))
        except asyncio.TimeoutError:
            raise KafkaUnavailable("Kafka producer: another start is still under way") from None
        try:
            if self._producer is not None:
                return self._producer
            producer = self._factory()
            try:
                await asyncio.wait_for(producer.start(), max(0.01, until - time.monotonic()))
            except (asyncio.TimeoutError, KafkaError, OSError) as exc:
                self._retire(producer, f"start failed: {type(exc).__name__}")
                raise KafkaUnavailable(f"Kafka producer could not start: {type(exc).__name__}: {exc}") from None
            except asyncio.CancelledError:  # the caller gave up (a readiness probe's own timeout)
                self._retire(producer, "start cancelled")
                raise
            self._producer = producer
            return producer
        finally:
            self._starting.release()

    async def send(self, topic: str, *, key: bytes | None, value: bytes, headers: dict[str, str] | None = None):
        """The broker's acknowledgment (RecordMetadata) within ``deadline`` seconds, or KafkaUnavailable.

        The send and the wait for its acknowledgment run in the caller's task (no task per send:
        ``asyncio.wait_for`` wraps a coroutine in one); past the deadline the sweep cancels that
        task, and the cancellation is taken back here as ``asyncio.timeout`` does (a cancellation
        from anyone else still propagates)."""
        until = time.monotonic() + self.deadline
        producer = self._producer or await self._current(until)
        hdrs = [(k, v.encode()) for k, v in headers.items()] if headers else []
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        flight = _InFlight(task, until)
        self._in_flight.add(flight)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)
        try:
            delivery = await producer.send(topic, value=value, key=key, headers=hdrs)
            return await delivery
        except asyncio.CancelledError:
            if not (flight.expired and task.uncancel() <= cancelling):
                raise
            self._drop(producer, f"no acknowledgment within {self.deadline:g} s")
            raise KafkaUnavailable(f"{topic}: not acknowledged within {self.deadline:g} s") from None
        except KafkaError as exc:
            self._drop(producer, f"{type(exc).__name__}")
            raise KafkaUnavailable(f"{topic}: not acknowledged: {type(exc).__name__}: {exc}") from None
        finally:
            self._in_flight.discard(flight)

    def _sweep(self) -> None:
        """Cancel the sends in flight past their deadline; again in ``_tick`` seconds while any is in flight."""
        now = time.monotonic()
        for flight in self._in_flight:
            if not flight.expired and flight.until <= now:
                flight.expired = True
                flight.task.cancel()
        self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep) if self._in_flight else None

    def _drop(self, producer: AIOKafkaProducer, why: str) -> None:
        """Retire ``producer`` if it is still the current one (concurrent sends fail together)."""
        if self._producer is producer:
            self._producer = None
            self._retire(producer, why)

    def _retire(self, producer: AIOKafkaProducer, why: str) -> None:
        self.replaced += 1
        self.last_error = why
        log.warning("producer_replaced", reason=why, replaced=self.replaced)
        task = asyncio.get_running_loop().create_task(self._stop(producer))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _stop(producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), STOP_LIMIT)
        except (asyncio.TimeoutError, KafkaError, OSError, RuntimeError) as exc:
            # A retired producer that cannot stop cleanly holds only sockets; it is abandoned.
            log.info("producer_abandoned", error=type(exc).__name__)

    async def probe(self) -> None:
        """Raise unless the producer in use can reach the cluster now (a metadata round trip)."""
        producer = await self._current(time.monotonic() + self.deadline)
        try:
            await producer.client.fetch_all_metadata()
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"the gateway's producer cannot reach Kafka: {type(exc).__name__}") from None

    async def close(self) -> None:
        """Flush and stop within STOP_LIMIT seconds, whatever state Kafka is in."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)
        for task in list(self._retiring):
            task.cancel()
