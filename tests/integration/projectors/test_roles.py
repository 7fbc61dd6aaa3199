"""Database roles of the embedded PostgreSQL: the read API's role reads the projections and
cannot write anything; the projectors' role is no superuser; every role needs its password;
a data folder of an older run (trust, a superuser role) is upgraded on its next start."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import story as st
from projectors.engine.schema import live_schema
from threadline.settings import PG_READER
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


def test_every_role_needs_its_password(embedded):
    for dsn in (embedded.effective_pg_dsn, embedded.effective_pg_api_dsn):
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
