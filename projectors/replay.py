"""Replay: rebuild a projection from offset 0 beside the live one, then swap (blue/green).

``rebuild`` creates a new schema (``<live>__b<build>``), projects every source topic into it
from the beginning up to the end offsets it found at the start (the rows only: the conversations
and the aggregate tables are computed once from every row at the end of that pass,
``read_models.Store.finish``, and kept per batch from then on), then swaps:

  1. in one transaction, holding the projection's swap lock exclusively (live batches take it
     shared, so none is half-way): if the live projector has stored offsets beyond the build's
     on a topic the build reads, the build catches up first (the transaction is abandoned, the
     loop goes on); offsets of topics the build does not read are kept as they are;
  2. otherwise: rename the live schema away, rename the build to the live name, hand the
     build's offsets to the live projector's name, drop the old schema. Readers see the old
     schema or the new one, never a mix.

A live projector notices on its next batch (the schema's ``meta.build_id`` changed), throws
that batch away and re-seeks to the offsets it now finds stored.

``as_of`` builds a time-travel snapshot instead: only events that happened at or before that
moment of event time, into ``<live>_asof_<yyyymmddhhmmss>``, never swapped; its views read the
as-of moment as "now".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from projectors.engine.runner import RunStats, Sources
from projectors.engine.schema import connect, create_schema, live_schema, lock_key, migrate, schema_exists
from projectors.engine.tracking import stored_offsets, write_offsets
from projectors.read_models import ReadModel, read_model_projector
from schemas.codec import Codec
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.replay")
MAX_CATCH_UP_ROUNDS = 50


@dataclass(frozen=True)
class RebuildResult:
    projection: str
    schema: str  # where the rebuilt rows are now (the live name after a swap)
    build_id: str
    events: int
    seconds: float
    swapped: bool
    as_of: datetime | None

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def new_build_id(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%d%H%M%S}{uuid.uuid4().hex[:6]}"


def build_schema_name(live: str, build_id: str, as_of: datetime | None) -> str:
    if as_of is not None:
        return f"{live}_asof_{as_of.astimezone(UTC):%Y%m%d%H%M%S}_{build_id[-6:]}"
    return f"{live}__b{build_id}"


def rebuild(
    settings: Settings,
    projection: str,
    *,
    sources: Sources = Sources(),
    as_of: datetime | None = None,
    swap: bool | None = None,
    codec: Codec | None = None,
    batch_size: int = 5000,
    on_progress: Callable[[int, int], None] | None = None,
) -> RebuildResult:
    """Rebuild ``projection``; ``swap`` defaults to True for a rebuild, False for an as-of build."""
    import time

    swap = (as_of is None) if swap is None else swap
    live = live_schema(settings, projection)
    build_id = new_build_id()
    schema = build_schema_name(live, build_id, as_of)
    name = f"{live}@{build_id}"
    conn = connect(settings, f"replay:{live}")
    try:
        migrate(conn)
        create_schema(conn, projection, schema, build_id, as_of)
        conn.execute(
            "insert into projection_builds (build_id, projection, schema_name, as_of) values (%s, %s, %s, %s)",
            (build_id, projection, schema, as_of),
        )
        targets = end_offsets(settings, sources.topics())
        total = sum(targets.values())
        log.info("rebuild_started", projection=projection, schema=schema, build=build_id, events=total)
        projector = read_model_projector(
            settings,
            projection,
            sources=sources,
            schema=schema,
            name=name,
            codec=codec,
            as_of=as_of,
            batch_size=batch_size,
            create=False,
            deferred=True,  # nobody reads the build before the swap: conversations and aggregates once
        )
        t0 = time.perf_counter()

        def progress(stats: RunStats) -> None:
            if on_progress:
                on_progress(min(stats.events, total), total)

        projector.run(stop_at=targets, on_batch=progress)
        model = projector.projection
        assert isinstance(model, ReadModel)
        model.finish(conn)  # the derived tables once; the catch-up rounds keep them per batch
        swapped = False
        if swap:
            for _ in range(MAX_CATCH_UP_ROUNDS):
                behind = _try_swap(conn, live, schema, name, build_id, sources.topics())
                if behind is None:
                    swapped = True
                    break
                projector.run(stop_at=behind, on_batch=progress)
            else:
                raise RuntimeError(f"{live}: the rebuild did not catch up with the live projector")
        seconds = time.perf_counter() - t0
        conn.execute(
            "update projection_builds set finished_at = now(), events = %s,"
            " swapped_at = case when %s then now() end where build_id = %s",
            (projector.stats.events, swapped, build_id),
        )
        if on_progress:
            on_progress(total, total)
        result = RebuildResult(
            projection, live if swapped else schema, build_id, projector.stats.events, seconds, swapped, as_of
        )
        log.info(
            "rebuild_finished",
            projection=projection,
            schema=result.schema,
            build=build_id,
            events=result.events,
            seconds=round(seconds, 3),
            swapped=swapped,
        )
        return result
    finally:
        conn.close()


def _try_swap(conn, live: str, build_schema: str, build_name: str, build_id: str, topics: list[str]) -> dict | None:
    """Swap if the build has every event the live projector has on the ``topics`` the build reads;
    else the offsets to reach first. Offsets the live projector stored for other topics (an older
    topic version, a source it no longer reads) are no reason to wait: the build never reads them."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (lock_key("swap", live),))
        live_offsets = stored_offsets(conn, live)
        build_offsets = stored_offsets(conn, build_name)
        behind = {k: v for k, v in live_offsets.items() if k[0] in topics and build_offsets.get(k, 0) < v}
        if behind:
            return behind
        retired = f"{live}__r{build_id}"[:63]
        if schema_exists(conn, live):
            conn.execute(f"alter schema {live} rename to {retired}")
        conn.execute(f"alter schema {build_schema} rename to {live}")
        conn.execute("delete from projection_offsets where projector = %s", (live,))
        with conn.cursor() as cur:
            write_offsets(cur, live, {**live_offsets, **build_offsets})
        conn.execute("delete from projection_offsets where projector = %s", (build_name,))
        conn.execute("update projection_builds set schema_name = %s where build_id = %s", (live, build_id))
        conn.execute(f"drop schema if exists {retired} cascade")
    log.info("projection_swapped", schema=live, build=build_id)
    return None
