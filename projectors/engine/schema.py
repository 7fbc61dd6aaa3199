"""Schema lifecycle of the projections: the shared migrations, the live schema of a projection
(created on first use, its views re-created when ``projectors.ddl`` moved on), builds beside it,
and the advisory-lock keys that serialize them.

A projection lives in its own PostgreSQL schema (``<prefix><projection>``), made from
``projectors.ddl``; what every projection shares (the tracking table ``projection_offsets``,
``projection_builds``, the contacts table) comes from the versioned SQL of ``projectors/migrations``.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from projectors import aggregates, ddl
from projectors.migrate import migrate
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.projector")

__all__ = [
    "connect",
    "create_schema",
    "ensure_live",
    "live_schema",
    "lock_key",
    "migrate",
    "schema_exists",
    "upgrade_views",
]


def live_schema(settings: Settings, projection: str) -> str:
    return ddl.check_ident(f"{settings.projections.prefix}{projection}")


def lock_key(kind: str, name: str) -> str:
    """The advisory-lock key of ``kind`` (``writer``: one projector instance per name; ``swap``:
    a schema's build is swapped while no batch writes it) for ``name``."""
    return f"threadline:{kind}:{name}"


def connect(settings: Settings, application_name: str = "threadline-projector") -> psycopg.Connection:
    return psycopg.connect(settings.effective_pg_dsn, autocommit=True, application_name=application_name[:63])


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone() is not None


def create_schema(
    conn: psycopg.Connection, projection: str, schema: str, build_id: str, as_of: datetime | None = None
) -> None:
    with conn.transaction():
        conn.execute(ddl.schema_sql(projection, schema))
        conn.execute(
            f"insert into {schema}.meta (projection, build_id, as_of) values (%s, %s, %s)",
            (projection, build_id, as_of),
        )


def ensure_live(conn: psycopg.Connection, projection: str, schema: str) -> None:
    """Create the live schema on first use (serialized: two projectors may start at once)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (lock_key("swap", schema),))
        if not schema_exists(conn, schema):
            conn.execute(ddl.schema_sql(projection, schema))
            conn.execute(f"insert into {schema}.meta (projection, build_id) values (%s, 'initial')", (projection,))
        else:
            upgrade_views(conn, projection, schema)


def upgrade_views(conn: psycopg.Connection, projection: str, schema: str) -> bool:
    """Re-create the views of a schema made by an older ``ddl`` (its tables were altered by the
    migrations) and fill the aggregate tables it did not keep; ``clock`` stays. Returns whether it did. Call inside a transaction."""
    (version,) = conn.execute(f"select ddl_version from {schema}.meta").fetchone()
    if version >= ddl.DDL_VERSION:
        return False
    views = [
        v
        for (v,) in conn.execute(
            "select viewname from pg_views where schemaname = %s and viewname <> 'clock'", (schema,)
        )
    ]
    if views:
        conn.execute("drop view if exists " + ", ".join(f"{schema}.{ddl.check_ident(v)}" for v in views) + " cascade")
    conn.execute(ddl.views_sql(projection, schema))
    if version < 5:  # the aggregate tables (migration 0006) are filled from the rows
        aggregates.refresh(conn, schema)
    conn.execute(f"update {schema}.meta set ddl_version = %s", (ddl.DDL_VERSION,))
    log.info("projection_views_upgraded", schema=schema, ddl_version=ddl.DDL_VERSION, views=len(views))
    return True


def build_id(conn: psycopg.Connection | psycopg.Cursor, schema: str) -> str:
    """The build a projection schema holds (``meta.build_id``; a replay's swap changes it)."""
    return conn.execute(f"select build_id from {ddl.check_ident(schema)}.meta").fetchone()[0]
