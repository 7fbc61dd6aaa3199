"""Versioned SQL migrations: projectors/migrations/NNNN_name.sql, applied once each, in order."""

from __future__ import annotations

from importlib import resources

import psycopg


def migrations() -> list[tuple[str, str]]:
    folder = resources.files("projectors") / "migrations"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply what is not applied yet; returns the versions applied now."""
    applied_now = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(7240011)")
        conn.execute(
            "create table if not exists schema_migrations "
            "(version text primary key, applied_at timestamptz not null default now())"
        )
        done = {r[0] for r in conn.execute("select version from schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("insert into schema_migrations (version) values (%s)", (version,))
            applied_now.append(version)
    return applied_now
