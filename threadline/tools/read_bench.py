"""Benchmark suite ``read`` of ``threadline bench``: the read API at a million contacts (a tool: it
starts the read API as a process, as the freshness suite does).

The projection tables are filled in PostgreSQL from generated rows (``insert ... select`` over
``generate_series``: no Kafka, no projector), once, in a data schema. Two sets of projection
schemas read them through views, side by side in one run:

* ``kept`` — the schemas as the projector makes them: the aggregate tables (projectors/aggregates.py)
  filled once from the rows (``aggregates.refresh``, as an upgrade does);
* ``views`` — the aggregate tables replaced by views of their from-scratch queries
  (``aggregates.FROM_SCRATCH``): every read aggregates every row, as before the aggregates were kept.

For each, the read API runs as its own process (``threadline serve api``) and 16 concurrent clients
ask it for customer cards, sales contexts, inbox pages, identity lookups and engagement pages of
random customers; p50/p99 per endpoint.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

from threadline.benchkit import BenchContext, Section

CONTACTS = 1_000_000
CUSTOMERS = 200_000
CONVERSATIONS_PER_CUSTOMER = 1.5
CLIENTS = 16
REQUESTS = {"kept": 400, "views": 96}  # per endpoint (the views take seconds per request)
SEQUENTIAL = {"kept": 100, "views": 12}  # one client: the service time without queueing
WARMUP = 64
AIM_P99_MS = 50.0
CHANNELS = ("email", "chat", "twitter", "whatsapp", "phone", "facebook", "review", "store")

# The projection tables, generated. Customer n (1..CUSTOMERS) is c-n: its contacts are those with
# i % CUSTOMERS = n - 1, spread over the last 365 days; its conversations are k-n-0, k-n-1 (when
# n is even): one in five open, the rest resolved; each with an SLA clock, one in four breached.
FILL = (
    """
insert into {s}.customers
select 'c-' || n, 'c-' || n, now() - interval '400 days' from generate_series(1, {customers}) n""",
    """
insert into {s}.customer_identities
select 'c-' || n, 'email', '', 'user' || n || '@example.com', now() - interval '400 days', now() - interval '1 day'
from generate_series(1, {customers}) n
union all
select 'c-' || n, 'phone', '', '+3120' || lpad(n::text, 7, '0'), now() - interval '400 days', now() - interval '1 day'
from generate_series(1, {customers}) n""",
    """
insert into {s}.contacts
select md5('contact-' || i)::uuid, 'c-' || (i % {customers} + 1), 'message',
       now() - make_interval(secs => (i * 7919) % (365 * 86400)), now(), 'bench',
       ({channels})[i % {n_channels} + 1],
       case when i % 10 < 7 then 'inbound' else 'outbound' end,
       case when i % 10 < 7 then 'customer' else 'agent' end,
       null, null, 'Hello, my order ' || i || ' has not arrived', 'en',
       case when i % 3 = 0 then ((i % 21) - 10) / 10.0 end, null, null,
       '[]', case when i % 9 = 0 then jsonb_build_array(jsonb_build_object('kind', 'order_number', 'value', 'o-' || i))
                  else '[]' end,
       '[]', '[]', '{{}}', '{{}}', 0, i
from generate_series(0::bigint, {contacts} - 1) i""",
    """
insert into {s}.conversations
select 'k-' || n || '-' || j, 'c-' || n, now() - make_interval(secs => ((n * 31 + j) * 7919) % (365 * 86400)),
       now() - make_interval(secs => ((n * 31 + j) * 7919) % (365 * 86400)) + interval '2 hours',
       case when (n + j) % 5 = 0 then 'open' else 'resolved' end,
       ({channels})[(n + j) % {n_channels} + 1], ({channels})[(n + j) % {n_channels} + 1],
       array[({channels})[(n + j) % {n_channels} + 1]], 0,
       case when (n + j) % 5 = 0 then 'agent' else 'nobody' end,
       case when (n + j) % 4 = 0 then 'sla_breached' when (n + j) % 5 = 0 then 'sla_started' else 'sla_hit' end,
       'first_response', now() - make_interval(secs => ((n * 31 + j) * 7919) % (365 * 86400)) + interval '1 hour',
       case when (n + j) % 4 = 0 then 1 else 0 end, 3,
       md5('contact-' || (n - 1))::uuid::text, now() - make_interval(secs => ((n * 31 + j) * 7919) % (365 * 86400)),
       1, null, null
from generate_series(1::bigint, {customers}) n, generate_series(0, 1) j where j = 0 or n % 2 = 0""",
    """
insert into {s}.conversation_events (event_id, origin_customer_id, conversation_id, event_type, occurred_at,
    recorded_at, channel, waiting_on, sla_kind, sla_target_seconds, sla_started_at, sla_due_at, facts,
    source_partition, source_offset, version)
select c.conversation_id || '-' || e.t, c.origin_customer_id, c.conversation_id, e.t, c.opened_at, c.opened_at,
       c.channel, c.waiting_on, 'first_response', 3600, c.opened_at, c.opened_at + interval '1 hour', '[]', 0, 0,
       e.v
from {s}.conversations c,
     lateral (values ('sla_started', 1), (case when c.last_sla_event = 'sla_started' then null else c.last_sla_event end, 2))
         e(t, v)
where e.t is not null""",
)


def load(conn, s: str, contacts: int, customers: int, console) -> dict[str, float]:
    """Fill schema ``s`` (made by ``create_schema``) and keep its aggregates; seconds per step."""
    from projectors import aggregates

    params = {
        "s": s,
        "customers": customers,
        "contacts": contacts,
        "channels": "array[" + ", ".join(f"'{c}'" for c in CHANNELS) + "]",
        "n_channels": len(CHANNELS),
    }
    took = {}
    for i, sql in enumerate(FILL):
        with console.status(f"generating projection rows ({i + 1}/{len(FILL)}) ..."):
            t0 = time.perf_counter()
            conn.execute(sql.format(**params))
            took[f"fill {i + 1}"] = time.perf_counter() - t0
    with console.status("keeping the aggregates (from every row) ..."):
        t0 = time.perf_counter()
        with conn.transaction():
            aggregates.refresh(conn, s)
        took["aggregates"] = time.perf_counter() - t0
    conn.execute(f"vacuum analyze {s}.contacts, {s}.conversations, {s}.conversation_events, {s}.customers")
    conn.execute(f"analyze {s}.customer_identities, {s}.inbox_items, {s}.sla_clocks, {s}.engagement_days")
    return took


# customer_summary before customer_stats (DDL version 3): the views variant reads the card with it.
SUMMARY_BEFORE = """
create or replace view {s}.customer_summary as
    select a.*, st.latest as sentiment_latest, st.avg_30d as sentiment_30d,
           st.recent_7d as sentiment_7d, st.prior_23d as sentiment_prior_23d
    from (select customer_id, min(occurred_at) as first_contact_at, max(occurred_at) as last_contact_at,
                 count(*) as contacts,
                 (array_agg(language order by occurred_at desc, event_id desc) filter (where language is not null))[1]
                     as language,
                 array_agg(distinct channel) as channels
          from {s}.v_contacts group by customer_id) a
    left join {s}.customer_sentiment st using (customer_id)"""


def reader_schemas(conn, data: str, prefix: str, from_scratch: bool) -> None:
    """Schemas ``<prefix>support|sales|marketing`` whose tables are views of ``data``'s (and, with
    ``from_scratch``, whose aggregate tables are views computing them from every row)."""
    from projectors import aggregates, ddl

    tables = [
        r[0]
        for r in conn.execute(
            "select tablename from pg_tables where schemaname = %s and tablename <> 'meta' order by 1", (data,)
        )
    ]
    for projection in ddl.PROJECTIONS:
        s = ddl.check_ident(f"{prefix}{projection}")
        with conn.transaction():
            conn.execute(
                f"create schema {s}; create table {s}.meta (like {data}.meta including defaults);"
                f" create view {s}.clock as select coalesce(as_of, now()) as now from {s}.meta"
            )
            conn.execute(
                f"insert into {s}.meta (projection, build_id, ddl_version) values (%s, 'bench', %s)",
                (projection, ddl.DDL_VERSION),
            )
            for t in tables:
                if from_scratch and t in aggregates.FROM_SCRATCH:
                    cols = [
                        r[0]
                        for r in conn.execute(
                            "select column_name from information_schema.columns where table_schema = %s"
                            " and table_name = %s order by ordinal_position",
                            (data, t),
                        )
                    ]
                    body = aggregates.FROM_SCRATCH[t].format(s=data)
                    conn.execute(f"create view {s}.{t} ({', '.join(cols)}) as {body}")
                else:
                    conn.execute(f"create view {s}.{t} as select * from {data}.{t}")
            conn.execute(ddl.views_sql(projection, s))
            if from_scratch:
                conn.execute(SUMMARY_BEFORE.format(s=s))


def endpoints(rng: random.Random, customers: int) -> dict[str, callable]:
    def card():
        return f"/customers/c-{rng.randint(1, customers)}", {}

    def sales():
        return f"/sales/customers/c-{rng.randint(1, customers)}", {}

    def inbox():
        return "/support/inbox", {"limit": 50, **({"sla_state": "breached"} if rng.random() < 0.3 else {})}

    def lookup():
        return "/customers/by-identity", {"kind": "email", "value": f"User{rng.randint(1, customers)}@Example.com"}

    def engagement():
        return "/marketing/engagement", {"limit": 50, **({"channel": "email"} if rng.random() < 0.5 else {})}

    return {
        "GET /customers/{id} (card)": card,
        "GET /sales/customers/{id}": sales,
        "GET /support/inbox (50)": inbox,
        "GET /customers/by-identity": lookup,
        "GET /marketing/engagement (50)": engagement,
    }


@dataclass
class Run:
    latencies: list[float]  # seconds, sorted
    statuses: Counter  # the answers that were not 200, by status
    api_cpu: float  # CPU seconds of the API process over the run

    def cpu_ms_per_request(self) -> float:
        return self.api_cpu / max(1, len(self.latencies)) * 1000


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process ``pid`` (Linux /proc), 0 when unknown."""
    import os

    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return 0.0


def measure(base: str, token: str, make, requests: int, clients: int, pid: int | None) -> Run:
    c0 = cpu_seconds(pid)
    latencies, statuses = asyncio.run(_measure(base, token, make, requests, clients))
    return Run(latencies, statuses, cpu_seconds(pid) - c0)


async def _measure(base: str, token: str, make, requests: int, clients: int) -> tuple[list[float], Counter]:
    """Latencies (s) of ``requests`` requests made by ``make`` from ``clients`` concurrent clients,
    and the statuses other than 200."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    queue = list(range(requests))

    async def client(c: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            path, params = make()
            t0 = time.perf_counter()
            r = await c.get(path, params=params)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                statuses[r.status_code] += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=120, limits=limits
    ) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    return sorted(latencies), statuses


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")


def read_suite(ctx: BenchContext) -> list[Section]:
    """p50/p99 of the read API's hot endpoints at CONTACTS contacts of CUSTOMERS customers, the
    aggregates kept (as projected) and computed at read time (views), side by side."""
    import re
    import shutil
    import tempfile
    from pathlib import Path

    from projectors.engine.schema import connect, create_schema
    from threadline.process import free_port, instances
    from threadline.tools.stack import apps

    prefix = re.sub(r"[^a-z0-9_]", "_", f"br{ctx.run_id}_".lower())[:24]
    data = f"{prefix}data"
    home = Path(tempfile.mkdtemp(prefix="threadline-read-"))
    if (ctx.settings.state_dir / "secrets").is_dir():
        shutil.copytree(ctx.settings.state_dir / "secrets", home / "secrets")
    conn = connect(ctx.settings, "bench-read")
    results: dict[tuple[str, str], Run] = {}
    alone: dict[tuple[str, str], Run] = {}
    try:
        create_schema(conn, "support", data, "bench")
        took = load(conn, data, CONTACTS, CUSTOMERS, ctx.console)
        sizes = {
            t: conn.execute(f"select count(*) from {data}.{t}").fetchone()[0]
            for t in ("contacts", "customers", "conversations", "conversation_events", "inbox_items", "engagement_days")
        }
        for variant, from_scratch in (("kept", False), ("views", True)):
            reader_schemas(conn, data, f"{prefix}{variant[0]}_", from_scratch)
        for variant in ("kept", "views"):
            settings = ctx.settings.model_copy(
                update={
                    "home": home,
                    "api_port": free_port(),
                    "projection_prefix": f"{prefix}{variant[0]}_",
                    "log_level": "WARNING",
                }
            )
            try:
                with ctx.console.status(f"read API on the {variant} schemas ..."):
                    apps.start(settings, ("api",))
                    token = apps.token(settings, "api_tokens", "admin")
                    base = apps.url(settings, "api")
                    pid = next((m.pid() for m in instances(settings, "api") if m.pid()), None)
                    rng = random.Random(7)
                    for name, make in endpoints(rng, CUSTOMERS).items():
                        measure(base, token, make, WARMUP if variant == "kept" else CLIENTS, CLIENTS, pid)
                        alone[(variant, name)] = measure(base, token, make, SEQUENTIAL[variant], 1, pid)
                        results[(variant, name)] = measure(base, token, make, REQUESTS[variant], CLIENTS, pid)
            finally:
                apps.stop(settings, ("api",))
    finally:
        for (name,) in conn.execute(
            "select nspname from pg_namespace where nspname like %s order by nspname desc", (prefix + "%",)
        ).fetchall():
            conn.execute(f"drop schema {name} cascade")
        conn.close()
        shutil.rmtree(home, ignore_errors=True)
    rows = []
    missed = []
    for name in endpoints(random.Random(), CUSTOMERS):
        kept, views = results[("kept", name)], results[("views", name)]
        refused = kept.statuses + views.statuses
        rows.append(
            [
                name,
                f"{pct(alone[('views', name)].latencies, 0.5):,.1f}",
                f"{pct(views.latencies, 0.5):,.0f}",
                f"{pct(views.latencies, 0.99):,.0f}",
                f"{pct(alone[('kept', name)].latencies, 0.5):,.1f}",
                f"{pct(alone[('kept', name)].latencies, 0.99):,.1f}",
                f"{pct(kept.latencies, 0.5):,.0f}",
                f"{pct(kept.latencies, 0.99):,.0f}",
                f"{kept.cpu_ms_per_request():,.1f}",
                f"{pct(views.latencies, 0.99) / pct(kept.latencies, 0.99):,.1f}×",
                ", ".join(f"{n} × {code}" for code, n in sorted(refused.items())) or "0",
            ]
        )
        if pct(kept.latencies, 0.99) >= AIM_P99_MS:
            missed.append(f"{name} p99 {pct(kept.latencies, 0.99):,.0f} ms")
    return [
        Section(
            "Read API at a million contacts",
            [
                "endpoint",
                "views 1 client p50 ms",
                f"views {CLIENTS} clients p50 ms",
                f"views {CLIENTS} clients p99 ms",
                "kept 1 client p50 ms",
                "kept 1 client p99 ms",
                f"kept {CLIENTS} clients p50 ms",
                f"kept {CLIENTS} clients p99 ms",
                "kept API CPU ms/request",
                f"p99 ({CLIENTS}) views ÷ kept",
                "not 200 (kept + views)",
            ],
            rows,
            text=[
                f"{sizes['contacts']:,} contacts of {sizes['customers']:,} customers, {sizes['conversations']:,} "
                f"conversations ({sizes['inbox_items']:,} open), {sizes['conversation_events']:,} conversation "
                f"events, {sizes['engagement_days']:,} (day, channel) rows, generated in PostgreSQL (no Kafka). "
                f"The read API (`threadline serve api`, one process) answers {CLIENTS} concurrent clients, "
                f"{REQUESTS['kept']} requests per endpoint ({REQUESTS['views']} on the views) after {WARMUP} warm-up ones "
                f"({CLIENTS} on the views), random customers; before them, {SEQUENTIAL['kept']} "
                f"({SEQUENTIAL['views']}) requests from one client alone give the service time without queueing. **kept**: the "
                "schemas as the projector keeps them (inbox_items, sla_clocks, customer_stats, engagement_days; "
                "projectors/aggregates.py); **views**: the same schemas with those tables replaced by views of "
                "their from-scratch queries (every read aggregates every row, as before they were kept) and "
                "`customer_summary` as it was before `customer_stats` (the sentiment of every customer joined). Both "
                "read the same rows (the projection schemas are views of one data schema), one after the other "
                "in the same run.",
            ],
            notes=[
                f"aim: p99 < {AIM_P99_MS:.0f} ms for every endpoint (kept): "
                + ("met." if not missed else "**not met**: " + "; ".join(missed) + "."),
                "loading: "
                + ", ".join(f"{k} {v:,.0f} s" for k, v in took.items())
                + " (the aggregates from every row, once, as an upgrade fills them).",
                "Everything (PostgreSQL, the API, the 16 clients) shares this 2-core machine; the API is one "
                "process (one uvicorn worker, a pool of 8 connections, 1 s to get one: a 503 past it). API CPU "
                "ms/request: the API process's user + system CPU over the 16-client run ÷ requests "
                "(PostgreSQL's not counted).",
            ],
        )
    ]
