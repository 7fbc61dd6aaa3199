"""The hot reads do bounded work: the customer card, the sales context, an inbox page and an
engagement page read rows of the customer or of the page (an inbox page filtered on the SLA
state: at most the open conversations), not every row of the projection (the
aggregates are kept per batch: projectors/aggregates.py). Asserted on the rows PostgreSQL's plans
read (EXPLAIN ANALYZE), never on time; the same reads over the from-scratch views, as a control,
read every row (every contact, every conversation event, or every open conversation)."""

from __future__ import annotations

import json
import uuid

import pytest
from rich.console import Console

from projectors import profiles
from projectors.api import paging, queries
from projectors.engine.schema import create_schema
from threadline.tools import read_bench

CONTACTS, CUSTOMERS = 20_000, 4_000


def rows_read(pg, sql: str, params) -> int:
    """Rows the plan's scans returned (table, index and bitmap scans), summed over loops."""
    [[plan]] = pg.execute("explain (analyze, format json) " + sql, params).fetchall()
    total = 0

    def walk(node):
        nonlocal total
        if node["Node Type"].endswith("Scan") and node.get("Relation Name") not in (None, "meta"):
            total += node["Actual Rows"] * node.get("Actual Loops", 1)
        for child in node.get("Plans", []):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return total


@pytest.fixture(scope="module")
def schemas(settings):
    import psycopg

    prefix = f"t{uuid.uuid4().hex[:8]}_rw"
    with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as pg:
        data = f"{prefix}data"
        create_schema(pg, "support", data, "test")
        read_bench.load(pg, data, CONTACTS, CUSTOMERS, Console(quiet=True))
        read_bench.reader_schemas(pg, data, f"{prefix}k_", False)
        read_bench.reader_schemas(pg, data, f"{prefix}v_", True)
        (open_,) = pg.execute(f"select count(*) from {data}.inbox_items").fetchone()
        yield {"kept": f"{prefix}k_", "views": f"{prefix}v_", "open": open_}
        for (name,) in pg.execute(
            "select nspname from pg_namespace where nspname like %s order by nspname desc", (prefix + "%",)
        ).fetchall():
            pg.execute(f"drop schema {name} cascade")


def hot_reads(p: str) -> dict[str, tuple[str, dict]]:
    inbox, after = paging.page_sql(queries.inbox(f"{p}support"), queries.INBOX, None, 0)
    engagement, after_e = paging.page_sql(queries.engagement(f"{p}marketing"), queries.ENGAGEMENT, None, 0)
    page = {"limit": 50, "offset": 0}
    return {
        "card summary": (profiles.queries(f"{p}support")["summary"], {"ids": ["c-42"]}),
        "sales context": (queries.customer_360(f"{p}sales"), {"customer_id": "c-42"}),
        "inbox page": (inbox, {"sla_state": None, "channel": None, "waiting_on": None, **after, **page}),
        "breached inbox page": (inbox, {"sla_state": "breached", "channel": None, "waiting_on": None, **after, **page}),
        "engagement page": (engagement, {"from": None, "to": None, "channel": None, **after_e, **page}),
    }


@pytest.mark.parametrize("read", list(hot_reads("x_")))
def test_a_hot_read_reads_the_rows_of_its_customer_or_page_not_every_row(settings, schemas, read):
    import psycopg

    with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as pg:
        sql, params = hot_reads(schemas["kept"])[read]
        kept = rows_read(pg, sql, params)
        sql, params = hot_reads(schemas["views"])[read]
        views = rows_read(pg, sql, params)
    # a customer has ~5 contacts and 1-2 conversations; a page has 50 rows (and their customers). A page
    # filtered on the SLA state (which depends on the clock) may read every open conversation and its
    # customer: still the inbox, not every conversation and contact.
    bound = 2 * schemas["open"] + 50 if read == "breached inbox page" else 500
    assert kept <= bound, f"{read}: {kept} rows read"
    if read != "breached inbox page":  # the control (views) reads every open conversation there too
        assert views >= 5 * kept, f"{read}: the control read {views} rows, the kept {kept}"
