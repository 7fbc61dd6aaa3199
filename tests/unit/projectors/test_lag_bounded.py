"""GET /projections computes every projector's lag: the Kafka work it does is bounded whatever the
number of projectors (left-over builds, benchmarks, tests) and whatever Kafka answers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

from projectors import lag as lag_mod

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class FakeConsumer:
    """Topics ``live`` of 3 partitions ending at offset 100, ``quiet`` where a fetch never returns
    anything (an unreachable or stuck broker); counts every call."""

    partitions = {"live": {0, 1, 2}, "quiet": {0}}

    def __init__(self, *_, **__):
        self.calls: Counter[str] = Counter()
        self.positions: dict = {}
        FakeConsumer.last = self

    def topics(self):
        self.calls["topics"] += 1
        return set(self.partitions)

    def partitions_for_topic(self, topic):
        self.calls["partitions_for_topic"] += 1
        return self.partitions.get(topic)

    def end_offsets(self, tps):
        self.calls["end_offsets"] += 1
        return {tp: 100 for tp in tps}

    def beginning_offsets(self, tps):
        self.calls["beginning_offsets"] += 1
        return {tp: 0 for tp in tps}

    def assign(self, tps):
        self.calls["assign"] += 1
        self.positions = {tp: 0 for tp in tps}

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def pause(self, *tps):
        pass

    def resume(self, *tps):
        pass

    def poll(self, timeout_ms=0, max_records=500):
        self.calls["poll"] += 1
        return {
            tp: [SimpleNamespace(offset=o, timestamp=T0.timestamp() * 1000 + o) for o in range(o, min(o + 5, 100))]
            for tp, o in self.positions.items()
            if tp.topic == "live"
        }

    def close(self):
        pass


class FakeConn:
    def __init__(self, rows):
        self.rows = rows

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        rows = [("projection_offsets",)] if "to_regclass" in sql else self.rows
        return SimpleNamespace(fetchone=lambda: rows[0], fetchall=lambda: rows)


def offsets_rows(n_projectors: int) -> list[tuple]:
    rows = []
    for i in range(n_projectors):
        name = f"bench_{i}_support"
        for p in range(3):
            rows.append((name, "live", p, 10 + i % 40, T0))  # many projectors share positions
        rows.append((name, "quiet", 0, 50, T0))
        rows.append((name, f"deleted_topic_{i}", 0, 7, T0))  # a topic removed since
    return rows


def run(monkeypatch, n_projectors: int):
    monkeypatch.setattr(lag_mod, "KafkaConsumer", FakeConsumer)
    monkeypatch.setattr(lag_mod.psycopg, "connect", lambda *a, **k: FakeConn(offsets_rows(n_projectors)))
    settings = SimpleNamespace(effective_pg_dsn="x", kafka=SimpleNamespace(client_config=lambda: {}))
    return lag_mod.projection_lag(settings), FakeConsumer.last.calls


def test_the_kafka_work_of_a_lag_report_does_not_grow_with_the_number_of_projectors(monkeypatch):
    few, few_calls = run(monkeypatch, 3)
    many, many_calls = run(monkeypatch, 300)
    assert len(many) == 300
    # one metadata request, one per existing topic, never one per left-over projector or deleted topic
    assert many_calls["partitions_for_topic"] == few_calls["partitions_for_topic"] <= 2
    assert many_calls["end_offsets"] == many_calls["beginning_offsets"] == 1
    # the fetches for the ages are bounded (a partition that never answers does not cost a wait per projector)
    assert many_calls["poll"] <= lag_mod.TIMESTAMP_POLLS
    assert few_calls["poll"] <= lag_mod.TIMESTAMP_POLLS


def test_projectors_at_the_same_position_share_the_age_of_their_oldest_unprojected_event(monkeypatch):
    lags, _ = run(monkeypatch, 3)
    by = {x.projector: x for x in lags}
    # 3 live partitions 90..88 behind + the quiet one 50 behind; the ages come from the live records
    assert by["bench_0_support"].events == 3 * 90 + 50
    assert by["bench_2_support"].events == 3 * 88 + 50
    assert by["bench_0_support"].seconds > 0


def test_a_lag_report_is_computed_once_per_ttl_however_often_it_is_asked_for():
    from projectors.lag import LagCache

    now = [100.0]
    computed = []
    cache = LagCache(lambda: computed.append(now[0]) or [], ttl=2.0, clock=lambda: now[0])
    for _ in range(50):
        cache.get()
    assert len(computed) == 1
    now[0] += 1.0
    assert cache.get()[1] == 1.0 and len(computed) == 1
    now[0] += 1.5
    cache.get()
    assert computed == [100.0, 102.5]
