"""Projection lag: how many events, and how many seconds, each projector is behind its topics.

Events behind = end offset − stored next offset, summed over partitions. Seconds behind = the
age of the oldest event not projected yet (its Kafka timestamp), 0 when caught up. Builds in
progress (``<schema>@<build>``) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from kafka import KafkaConsumer, TopicPartition

from threadline.settings import Settings


@dataclass(frozen=True)
class Lag:
    projector: str
    events: int
    seconds: float
    partitions_behind: int
    last_projected_at: datetime | None


def summarize(
    projector: str,
    stored: dict[tuple[str, int], int],
    ends: dict[tuple[str, int], int],
    oldest_unprojected: dict[tuple[str, int], datetime],
    now: datetime,
    last_projected_at: datetime | None = None,
) -> Lag:
    """Pure: the lag of one projector from its stored offsets and the topics' end offsets."""
    behind = {k: max(0, end - stored.get(k, 0)) for k, end in ends.items()}
    waiting = [oldest_unprojected[k] for k, n in behind.items() if n and k in oldest_unprojected]
    seconds = max(0.0, (now - min(waiting)).total_seconds()) if waiting else 0.0
    return Lag(
        projector, sum(behind.values()), round(seconds, 3), sum(1 for n in behind.values() if n), last_projected_at
    )


def projection_lag(settings: Settings, projectors: list[str] | None = None, dsn: str | None = None) -> list[Lag]:
    with psycopg.connect(dsn or settings.effective_pg_dsn, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("select to_regclass('projection_offsets')").fetchone()[0] is None:
            return []
        rows = conn.execute(
            "select projector, topic, partition, next_offset, updated_at from projection_offsets"
            " where position('@' in projector) = 0 and (%s::text[] is null or projector = any(%s))",
            (projectors, projectors),
        ).fetchall()
    stored: dict[str, dict[tuple[str, int], int]] = {}
    updated: dict[str, datetime] = {}
    for name, topic, partition, offset, at in rows:
        stored.setdefault(name, {})[(topic, partition)] = offset
        updated[name] = max(at, updated.get(name, at))
    if not stored:
        return []
    consumer = KafkaConsumer(
        enable_auto_commit=False, group_id=None, request_timeout_ms=10_000, **settings.kafka.client_config()
    )
    try:
        topics = {t for s in stored.values() for t, _ in s}
        tps = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
        starts = {(tp.topic, tp.partition): o for tp, o in consumer.beginning_offsets(tps).items()}
        out = []
        for name in sorted(stored):
            mine = {k: v for k, v in ends.items() if k[0] in {t for t, _ in stored[name]}}
            positions = {k: stored[name].get(k, starts.get(k, 0)) for k in mine}
            oldest = _timestamps_at(consumer, {k: positions[k] for k, end in mine.items() if end > positions[k]})
            out.append(summarize(name, positions, mine, oldest, datetime.now(UTC), updated.get(name)))
        return out
    finally:
        consumer.close()


def _timestamps_at(consumer: KafkaConsumer, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], datetime]:
    """The Kafka timestamp of the record at each (topic, partition) offset: one fetch each."""
    if not offsets:
        return {}
    tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
    consumer.assign(list(tps))
    for tp, o in tps.items():
        consumer.seek(tp, o)
    out: dict[tuple[str, int], datetime] = {}
    for _ in range(20):
        for tp, messages in consumer.poll(timeout_ms=250, max_records=500).items():
            if messages and (tp.topic, tp.partition) not in out:
                out[(tp.topic, tp.partition)] = datetime.fromtimestamp(messages[0].timestamp / 1000, UTC)
                consumer.pause(tp)
        if len(out) == len(tps):
            break
    return out
