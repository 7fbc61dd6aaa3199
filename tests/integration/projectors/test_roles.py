"""Database roles of the embedded PostgreSQL: the read API's role reads the projections and
cannot write anything; the key store's role (the gateway, the worker) reaches privacy.data_keys
and nothing else, as the roles script of compose and k8s makes it; the projectors' role is no
superuser; every role needs its password; a data folder of an older run (trust, a superuser
role) is upgraded on its next start."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import story as st
from projectors.engine.schema import live_schema
from schemas.keystore import KeyStoreUnavailable, PostgresKeyRing, create_store
from schemas.privacy import MasterKeyWrapper, Pseudonymizer, Subject
from threadline.settings import PG_KEYSTORE, PG_READER
from threadline.process import free_port


def _without_password(dsn: str) -> str:
    d = conninfo_to_dict(dsn)
    d.pop("password", None)
    return make_conninfo(**d)


@pytest.fixture
def embedded(settings):
    if not settings.embedded_pg and conninfo_to_dict(settings.effective_pg_api_dsn).get("user") != PG_READER:
        pytest.skip("THREADLINE_PG_DSN given without THREADLINE_PG_API_DSN: its roles are the operator's")
    return settings


def test_the_read_api_role_reads_the_projections_and_cannot_write(embedded, prefixed, sources, codec, unique):
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    st.project(prefixed, sources, projections=["support"], codec=codec)
    schema = live_schema(prefixed, "support")
    with psycopg.connect(prefixed.effective_pg_api_dsn, autocommit=True) as reader:
        assert reader.execute("select current_user").fetchone()[0] == PG_READER
        assert reader.execute(f"select count(*) from {schema}.contacts").fetchone()[0] == len(s.contacts)
        assert reader.execute(f"select count(*) from {schema}.timeline").fetchone()[0] > 0
        reader.execute("select count(*) from skeleton.contacts").fetchone()
        reader.execute("select count(*) from projection_offsets").fetchone()
        writes = [
            f"insert into {schema}.customers (origin_customer_id, customer_id, first_seen_at)"
            f" values ('x-{unique}', 'x-{unique}', now())",
            f"update {schema}.contacts set text = 'forged'",
            "delete from projection_offsets",
            f"create table public.forged_{unique} (x int)",
            f"create schema forged_{unique}",
            f"drop table {schema}.contacts",
        ]
        for statement in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
    with psycopg.connect(prefixed.effective_pg_dsn, autocommit=True) as owner:
        assert owner.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)


def _keystore_role_reaches_the_key_store_only(keystore_dsn: str, reader_dsn: str, schema: str) -> None:
    """The gateway's and the worker's role: keys made and read through the code's own key ring;
    no read model, no offset, no DDL, no key destroyed; the reader: no key store."""
    ring = PostgresKeyRing(keystore_dsn, MasterKeyWrapper(os.urandom(32)), Pseudonymizer(os.urandom(32)))
    try:
        subject = Subject("email", f"role.{uuid.uuid4().hex}@example.it")
        key = ring.ensure([subject])[subject]
        assert ring.resolve([key.token])[key.token].value == subject.value
    finally:
        ring.close()
    with psycopg.connect(keystore_dsn, autocommit=True) as keystore:
        denied = [
            f"select count(*) from {schema}.contacts",
            f"select count(*) from {schema}.customers",
            "select count(*) from projection_offsets",
            "update privacy.data_keys set wrapped_key = null",
            "delete from privacy.data_keys",
            "create table privacy.forged (x int)",
            f"create schema forged_{uuid.uuid4().hex[:8]}",
            "drop table privacy.data_keys",
        ]
        for statement in denied:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                keystore.execute(statement)
    with psycopg.connect(reader_dsn, autocommit=True) as reader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("select count(*) from privacy.data_keys")
    # through the code: a role the key store is not for gets the retryable error (503), not a 500
    other = PostgresKeyRing(reader_dsn, MasterKeyWrapper(os.urandom(32)), Pseudonymizer(os.urandom(32)))
    try:
        with pytest.raises(KeyStoreUnavailable, match="may not"):
            other.ensure([Subject("email", "nobody@example.it")])
    finally:
        other.close()


def test_the_key_store_role_reaches_the_key_store_and_no_read_model(embedded, prefixed, sources, codec, unique):
    if not embedded.embedded_pg:
        pytest.skip("the embedded server's roles only")
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    st.project(prefixed, sources, projections=["support"], codec=codec)
    with psycopg.connect(prefixed.effective_keystore_dsn, autocommit=True) as keystore:
        assert keystore.execute("select current_user").fetchone()[0] == PG_KEYSTORE
    _keystore_role_reaches_the_key_store_only(
        prefixed.effective_keystore_dsn, prefixed.effective_pg_api_dsn, live_schema(prefixed, "support")
    )


ROLES_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "compose" / "postgres" / "20-threadline-roles.sh"


def test_the_roles_script_of_compose_and_k8s_grants_as_the_local_stack(services, unique):
    """deploy/compose/postgres/20-threadline-roles.sh, run by psql against a fresh database of the
    real server as the postgres image runs it; then the projector's start (``create_store``, as
    the owner) and a projection table: the key store's role reaches the keys and nothing else."""
    from threadline.tools.stack import postgres

    if not services.settings.embedded_pg or shutil.which("psql") is None:
        pytest.skip("the embedded server and psql")
    s = services.settings
    db, owner, reader, keystore = (f"t{unique}_{n}" for n in ("db", "owner", "reader", "keystore"))
    passwords = {r: uuid.uuid4().hex for r in (owner, reader, keystore)}
    admin = conninfo_to_dict(postgres.admin_dsn(s))
    with psycopg.connect(postgres.admin_dsn(s), autocommit=True) as conn:
        conn.execute(f'create database "{db}"')
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(s.stack.pg_port),
        "PGPASSWORD": admin["password"],
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": db,
        "DB_OWNER": owner,
        "DB_OWNER_PASSWORD": passwords[owner],
        "DB_READER": reader,
        "DB_READER_PASSWORD": passwords[reader],
        "DB_KEYSTORE": keystore,
        "DB_KEYSTORE_PASSWORD": passwords[keystore],
    }

    def dsn(role):
        return make_conninfo(f"postgresql://{role}@127.0.0.1:{s.stack.pg_port}/{db}", password=passwords[role])

    try:
        r = subprocess.run(["bash", str(ROLES_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        # the gateway before the projector's first start: no table yet, and its role may not make it
        early = PostgresKeyRing(dsn(keystore), MasterKeyWrapper(os.urandom(32)), Pseudonymizer(os.urandom(32)))
        try:
            with pytest.raises(KeyStoreUnavailable, match="the projector"):
                early.ensure([Subject("email", "early@example.it")])
        finally:
            early.close()
        projector = s.model_copy(update={"pg_dsn": dsn(owner), "pg_password_file": None, "pg_password": None})
        projector = projector.model_copy(
            update={"privacy_master_key": "A" * 43 + "=", "privacy_pseudonym_key": "B" * 43 + "="}
        )
        assert create_store(projector)  # the projector's start, as the owner
        with psycopg.connect(dsn(owner), autocommit=True) as conn:
            conn.execute("create schema support")
            conn.execute("create table support.contacts (event_id text)")
            conn.execute("create table support.customers (customer_id text)")
            conn.execute("create table projection_offsets (x int)")
        with psycopg.connect(dsn(reader), autocommit=True) as conn:
            assert conn.execute("select count(*) from support.contacts").fetchone() == (0,)
        _keystore_role_reaches_the_key_store_only(dsn(keystore), dsn(reader), "support")
    finally:
        with psycopg.connect(postgres.admin_dsn(s), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{db}" with (force)')
            for role in (owner, reader, keystore):
                conn.execute(f'drop role if exists "{role}"')


def test_every_role_needs_its_password(embedded):
    for dsn in (embedded.effective_pg_dsn, embedded.effective_pg_api_dsn, embedded.effective_keystore_dsn):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(dsn), connect_timeout=5).close()
        wrong = make_conninfo(dsn, password="not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong, connect_timeout=5).close()


def test_a_data_folder_of_an_older_run_is_upgraded_on_its_next_start(services):
    from threadline.tools.stack import postgres

    if not services.settings.embedded_pg:
        pytest.skip("the embedded server only")
    home = services.settings.state_dir / "test-pg" / uuid.uuid4().hex[:8]
    s = services.settings.model_copy(update={"home": home, "pg_port": free_port(), "pg_dsn": None, "pg_api_dsn": None})
    postgres.start(s)
    try:
        # Make it what an older run left: trust for everyone, threadline a superuser, no reader.
        with psycopg.connect(postgres.admin_dsn(s), autocommit=True) as admin:
            admin.execute("alter role threadline superuser")
            admin.execute("drop owned by threadline_reader")
        with psycopg.connect(postgres.admin_dsn(s, "threadline"), autocommit=True) as admin:
            admin.execute("drop owned by threadline_reader")
        with psycopg.connect(postgres.admin_dsn(s), autocommit=True) as admin:
            admin.execute("drop role threadline_reader")
        (postgres.pgdata(s) / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        postgres.stop(s)

        postgres.start(s)  # the upgrade happens here
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(s.effective_pg_dsn), connect_timeout=5).close()
        with psycopg.connect(s.effective_pg_dsn, autocommit=True) as owner:
            assert owner.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
            owner.execute("create schema if not exists skeleton")
            owner.execute("create table if not exists skeleton.probe (x int)")
        with psycopg.connect(s.effective_pg_api_dsn, autocommit=True) as reader:
            assert reader.execute("select count(*) from skeleton.probe").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute("insert into skeleton.probe values (1)")
    finally:
        postgres.stop(s)
        shutil.rmtree(home, ignore_errors=True)
