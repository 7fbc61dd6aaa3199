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
        return lags_from(consumer, stored, updated, datetime.now(UTC))
    finally:
        consumer.close()


# The record fetches of one lag computation, whatever the number of projectors: a stack with many
# left-over projectors (builds, benchmarks, tests) must not make GET /projections take seconds each.
TIMESTAMP_POLLS = 12
POLL_MS = 250


def lags_from(
    consumer,
    stored: dict[str, dict[tuple[str, int], int]],
    updated: dict[str, datetime],
    now: datetime,
) -> list[Lag]:
    """The lag of every projector in ``stored`` (its next offset per topic partition) with one
    metadata request, one request of end offsets, one of start offsets, and at most
    ``TIMESTAMP_POLLS`` fetches for the ages: projectors at the same position share a fetch, topics
    that no longer exist (a left-over projector's) are not asked about."""
    existing = set(consumer.topics())
    topics = {t for s in stored.values() for t, _ in s} & existing
    tps = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(consumer.partitions_for_topic(t) or ())]
    ends = {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()} if tps else {}
    starts = {(tp.topic, tp.partition): o for tp, o in consumer.beginning_offsets(tps).items()} if tps else {}
    positions: dict[str, dict[tuple[str, int], int]] = {}
    wanted: set[tuple[tuple[str, int], int]] = set()
    for name in sorted(stored):
        mine_topics = {t for t, _ in stored[name]}
        positions[name] = {k: stored[name].get(k, starts.get(k, 0)) for k in ends if k[0] in mine_topics}
        wanted |= {(k, o) for k, o in positions[name].items() if ends[k] > o}
    stamps = _timestamps_at(consumer, wanted)
    out = []
    for name in sorted(stored):
        pos = positions[name]
        mine = {k: ends[k] for k in pos}
        oldest = {k: stamps[(k, o)] for k, o in pos.items() if (k, o) in stamps}
        out.append(summarize(name, pos, mine, oldest, now, updated.get(name)))
    return out


def _timestamps_at(consumer, wanted: set[tuple[tuple[str, int], int]]) -> dict[tuple[tuple[str, int], int], datetime]:
    """The Kafka timestamp of the record at each wanted ((topic, partition), offset), in at most
    ``TIMESTAMP_POLLS`` polls: each round seeks every partition to its lowest offset still wanted,
    and one fetch answers every wanted offset it covers. What the budget does not reach is left out
    (its projector's age then counts only the partitions found)."""
    pending = set(wanted)
    out: dict[tuple[tuple[str, int], int], datetime] = {}
    polls = 0
    while pending and polls < TIMESTAMP_POLLS:
        lowest: dict[tuple[str, int], int] = {}
        for k, o in pending:
            lowest[k] = min(o, lowest.get(k, o))
        tps = {TopicPartition(*k): o for k, o in lowest.items()}
        consumer.assign(list(tps))
        consumer.resume(*tps)
        for tp, o in tps.items():
            consumer.seek(tp, o)
        answered: set[tuple[str, int]] = set()
        while polls < TIMESTAMP_POLLS and len(answered) < len(tps):
            polls += 1
            for tp, messages in consumer.poll(timeout_ms=POLL_MS, max_records=500).items():
                k = (tp.topic, tp.partition)
                if not messages or k in answered:
                    continue
                answered.add(k)
                consumer.pause(tp)
                first = messages[0].offset
                for m in messages:
                    if (k, m.offset) in pending:
                        out[(k, m.offset)] = datetime.fromtimestamp(m.timestamp / 1000, UTC)
                # a wanted offset below the first record returned (compacted or deleted away): the
                # first record after it is the oldest not projected
                for key in [x for x in pending if x[0] == k and x[1] < first]:
                    out[key] = datetime.fromtimestamp(messages[0].timestamp / 1000, UTC)
                pending -= {x for x in pending if x[0] == k and x[1] <= messages[-1].offset}
        if not answered:
            break  # nothing comes back (an unreachable or empty partition): do not spend the rest
    return out


class LagCache:
    """The last lag report, reused for ``ttl`` seconds: GET /projections called by every dashboard
    and health probe costs one computation per ``ttl``, and concurrent callers wait for the one
    running instead of starting their own (``compute`` is called with no lock held by the caller)."""

    def __init__(self, compute, ttl: float = 2.0, clock=None):
        import threading
        import time

        self.compute = compute
        self.ttl = ttl
        self.clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value: list[Lag] = []

    def get(self) -> tuple[list[Lag], float]:
        """(the report, its age in seconds)."""
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.ttl:
                self._value, self._at = self.compute(), self.clock()
            return self._value, max(0.0, self.clock() - self._at)
