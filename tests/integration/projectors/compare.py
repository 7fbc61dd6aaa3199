"""Row-by-row comparison of two projection schemas."""

from __future__ import annotations

import psycopg

from projectors import aggregates
from projectors.ddl import TABLE_KEYS

VIEWS = {
    "support": (
        "timeline",
        "inbox",
        "customer_facts",
        "customer_identity_list",
        "conversation_state",
        "customer_summary",
    ),
    "sales": ("customer_360", "conversation_state"),
    "marketing": ("engagement_daily", "response_times", "reviews", "consent_latest", "customer_signals"),
}


def snapshot(conn: psycopg.Connection, schema: str, projection: str) -> dict[str, list[tuple]]:
    """Every table and view of the schema, rows in a total order. Run inside one transaction so
    the views' "now" is the same for both schemas."""
    out = {}
    for table, key in TABLE_KEYS.items():
        out[table] = conn.execute(f"select * from {schema}.{table} order by {key}").fetchall()
    for view in VIEWS[projection]:
        out[view] = conn.execute(f"select * from {schema}.{view} v order by v::text").fetchall()
    return out


def same_rows(settings, a: str, b: str, projection: str) -> tuple[dict, dict]:
    """Both schemas' rows; asserts first that each one's aggregates are what its rows give."""
    with psycopg.connect(settings.effective_pg_dsn) as conn:  # one transaction: one now()
        for schema in (a, b):
            assert_aggregates_match(conn, schema)
        return snapshot(conn, a, projection), snapshot(conn, b, projection)


def aggregates_from_scratch(conn: psycopg.Connection, schema: str) -> tuple[dict, dict]:
    """(the aggregate tables the projector kept, the same computed from every row), rows sorted."""
    kept, scratch = {}, {}
    for table in aggregates.TABLE_KEYS:
        kept[table] = sorted(map(tuple, conn.execute(f"select * from {schema}.{table}")), key=repr)
        scratch[table] = sorted(map(tuple, conn.execute(aggregates.FROM_SCRATCH[table].format(s=schema))), key=repr)
    return kept, scratch


def assert_aggregates_match(conn: psycopg.Connection, schema: str) -> None:
    kept, scratch = aggregates_from_scratch(conn, schema)
    for table in kept:
        assert kept[table] == scratch[table], f"{schema}.{table}: the kept aggregate differs from its rows"
    assert any(kept.values()), f"{schema}: no aggregate rows at all"
