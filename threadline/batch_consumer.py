"""A blocking consumer over aiokafka, for code that reads partitions it assigns itself.

``BatchConsumer`` offers the part of kafka-python's ``KafkaConsumer`` the projector runner uses
(``partitions_for_topic``, ``assign``, ``seek``, ``seek_to_beginning``, ``poll``, ``highwater``,
``close``), with the same meaning, over aiokafka's ``AIOKafkaConsumer`` running on an event loop
of its own thread. Records are parsed by aiokafka's C record parser, and fetched while the caller
works on the last batch: reading 100,000 bench contacts cost 4.6-4.9 µs of CPU a record against
kafka-python's 12.9-14.7 (docs/benchmarks.md, "Rebuild: records parsed by aiokafka").

No consumer group: offsets are the caller's (the projector keeps them in PostgreSQL). The
topic-partitions it returns are aiokafka's, equal to kafka-python's as tuples (``("t", 0)``), so
either kind can look them up; both kinds are taken as arguments.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from threadline.kafka import aiokafka_config
from threadline.settings import Settings

T = TypeVar("T")

# Seconds a call waits for the loop beyond its own timeout before it counts as hung.
CALL_MARGIN = 30.0


class BatchConsumer:
    """kafka-python's ``KafkaConsumer`` surface (the part above) over aiokafka; see the module."""

    def __init__(self, settings: Settings, *, client_id: str, max_poll_records: int = 500, **overrides: Any):
        from aiokafka import AIOKafkaConsumer

        self.max_poll_records = max_poll_records
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"kafka-{client_id}", daemon=True)
        self._thread.start()
        config = {
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": client_id,
            **aiokafka_config(settings),
            **overrides,
        }

        async def start() -> Any:  # made on its loop: aiokafka binds futures to the running loop
            consumer = AIOKafkaConsumer(**config)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            return consumer

        try:
            self._consumer = self._call(start())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    # -- the loop ------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(None if timeout is None else timeout + CALL_MARGIN)

    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """A plain call of the consumer's, made on its loop's thread (aiokafka's state is that loop's)."""

        async def run() -> T:
            return fn(*args)

        return self._call(run())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    @staticmethod
    def _tp(tp: Any) -> Any:
        from aiokafka.structs import TopicPartition

        return tp if isinstance(tp, TopicPartition) else TopicPartition(tp[0], tp[1])

    # -- kafka-python's surface ----------------------------------------------------------------

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions from the broker's metadata now (None: no such topic)."""

        async def ask() -> set[int] | None:
            # aiokafka's consumer knows the metadata of the topics it reads; this one asks for all
            cluster = await self._consumer._client.fetch_all_metadata()
            return cluster.partitions_for_topic(topic)

        return self._call(ask())

    def assign(self, partitions: Iterable[Any]) -> None:
        self._on_loop(self._consumer.assign, [self._tp(tp) for tp in partitions])

    def seek(self, partition: Any, offset: int) -> None:
        self._on_loop(self._consumer.seek, self._tp(partition), offset)

    def seek_to_beginning(self, *partitions: Any) -> None:
        self._call(self._consumer.seek_to_beginning(*(self._tp(tp) for tp in partitions)))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        """Up to ``max_records`` records already fetched, or those that arrive within
        ``timeout_ms``, by topic-partition ({} when none came)."""
        return self._call(
            self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records or self.max_poll_records),
            timeout_ms / 1000,
        )

    def highwater(self, partition: Any) -> int | None:
        """The partition's end offset as of the last fetch (None before one)."""
        return self._consumer.highwater(self._tp(partition))

    def close(self, autocommit: bool = False) -> None:  # noqa: ARG002 - kafka-python's signature; nothing is committed
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._consumer.stop(), 10)
        finally:
            self._stop_loop()
