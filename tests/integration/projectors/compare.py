"""Row-by-row comparison of two projection schemas."""

from __future__ import annotations

import psycopg

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
    with psycopg.connect(settings.effective_pg_dsn) as conn:  # one transaction: one now()
        return snapshot(conn, a, projection), snapshot(conn, b, projection)
