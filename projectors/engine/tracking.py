"""The tracking store: per projector, the next offset to read of every topic partition
(``projection_offsets``). The runner writes it in the same transaction as the rows those records
became, and seeks to it on start; Kafka's consumer-group offsets are never used. So the rows and
the position can never disagree, whatever crashes when."""

from __future__ import annotations

from datetime import datetime

import psycopg


def stored_offsets(conn: psycopg.Connection, projector: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        "select topic, partition, next_offset from projection_offsets where projector = %s", (projector,)
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


def write_offsets(
    cur,
    projector: str,
    offsets: dict[tuple[str, int], int],
    last_record_at: dict[tuple[str, int], datetime] | None = None,
) -> None:
    """Upsert the tracking rows of ``projector`` (inside the caller's transaction)."""
    if not offsets:
        return
    keys = sorted(offsets)
    cur.execute(
        "insert into projection_offsets (projector, topic, partition, next_offset, last_record_at)"
        " select %s, t, p, o, ts from unnest(%s::text[], %s::int[], %s::bigint[], %s::timestamptz[]) as u(t, p, o, ts)"
        " on conflict (projector, topic, partition) do update set next_offset = excluded.next_offset,"
        " last_record_at = coalesce(excluded.last_record_at, projection_offsets.last_record_at), updated_at = now()",
        (
            projector,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [offsets[k] for k in keys],
            [(last_record_at or {}).get(k) for k in keys],
        ),
    )
