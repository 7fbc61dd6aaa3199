"""A broker's clients as a stage runner (``streams.batch_runner``) uses them, without a broker: what
aiokafka's getmany gives, a producer that acknowledges on the loop's next turns and logs what
happened in order, a consumer that owns one partition and commits (or fails to), the admin
client's committed offsets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Record:
    """What aiokafka's getmany gives: a ConsumerRecord's fields the stage reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple = (("kind", b"contact"),)


class FakeBuilder:
    def __init__(self):
        self.records: list = []
        self.closed = False

    def append(self, *, timestamp, key, value, headers):
        self.records.append((key, value, headers))
        return object()

    def close(self):
        self.closed = True

    def record_count(self):
        return len(self.records)


class FakeProducer:
    """Acknowledges a batch on the loop's next turns, logging what happened in order."""

    def __init__(self, log: list):
        self.log = log
        self.sent: list[tuple[str, int, bytes | None, bytes | None, list]] = []
        self.ends: dict[tuple[str, int], int] = {}  # the next offset of each topic partition
        self.logs: dict[str, list] = {}  # partition 0 of each topic: its records, offset = index

    def create_batch(self):
        return FakeBuilder()

    async def send_batch(self, builder, topic, partition):
        assert builder.closed, "a batch handed over lingering"
        self.log.append(("send", topic))
        self.sent += [(topic, partition, *r) for r in builder.records]
        fut = asyncio.get_running_loop().create_future()
        base = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = base + len(builder.records)
        if partition == 0:
            self.logs.setdefault(topic, []).extend(builder.records)

        def ack():
            self.log.append(("ack", topic))
            fut.set_result(type("RecordMetadata", (), {"offset": base})())

        asyncio.get_running_loop().call_later(0.01, ack)
        return fut


class FakeConsumer:
    def __init__(self, log: list, tp, fail: bool = False):
        self.log, self.tp, self.fail = log, tp, fail
        self.owned = {tp}

    def assignment(self):
        return set(self.owned)

    def highwater(self, tp):
        return 120

    async def committed(self, tp):
        return self.committed_offset

    def seek(self, tp, offset):
        self.log.append(("seek", offset))

    committed_offset: int | None = 14

    async def commit(self, offsets):
        from aiokafka.errors import CommitFailedError

        if self.fail:
            raise CommitFailedError("rebalanced")
        self.log.append(("commit", {tp: o.offset for tp, o in offsets.items()}))


class BrokerDownProducer(FakeProducer):
    """The broker unreachable: every batch handed over fails to be acknowledged."""

    async def send_batch(self, builder, topic, partition):
        from aiokafka.errors import KafkaTimeoutError

        self.log.append(("send", topic))
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(KafkaTimeoutError())
        return fut


class FakeAdmin:
    """aiokafka's admin client as ``start_offset`` asks it: the faust group's committed offsets."""

    offsets: dict = {}

    def __init__(self, **_config):
        pass

    async def start(self):
        pass

    async def close(self):
        pass

    async def list_consumer_group_offsets(self, group_id, partitions=None):
        return {tp: o for tp, o in self.offsets.get(group_id, {}).items() if tp in partitions}
