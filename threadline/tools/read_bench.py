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
random customers; p50/p99 per endpoint. The clients are wrk (one thread, 16 connections, a Lua
script making the same requests as ``endpoints``): a C client takes little of the CPU that the API
and PostgreSQL share with it on one machine (httpx clients in this process, the fallback without
wrk, took more CPU per request than the API itself). On the kept schemas this tree's API runs with
1 and 2 worker processes and, with ``--compare REF``, REF's API (its code, the same schemas and
settings) in alternating rounds. Beside each latency: the CPU of the API's processes and of the
local PostgreSQL server per request, and the load average.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

from threadline.benchkit import BenchContext, Section, process_cpu_seconds

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


# The same requests as ``endpoints``, made by wrk's Lua (one request per call, random customers).
WRK_REQUESTS = {
    "GET /customers/{id} (card)": 'return "/customers/c-" .. math.random(1, {customers})',
    "GET /sales/customers/{id}": 'return "/sales/customers/c-" .. math.random(1, {customers})',
    "GET /support/inbox (50)": (
        'if math.random() < 0.3 then return "/support/inbox?limit=50&sla_state=breached" end'
        ' return "/support/inbox?limit=50"'
    ),
    "GET /customers/by-identity": (
        'return "/customers/by-identity?kind=email&value=User" .. math.random(1, {customers}) .. "%40Example.com"'
    ),
    "GET /marketing/engagement (50)": (
        'if math.random() < 0.5 then return "/marketing/engagement?limit=50&channel=email" end'
        ' return "/marketing/engagement?limit=50"'
    ),
}

WRK_SCRIPT = """
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  wrk.headers["Authorization"] = "Bearer {token}"
  refused = 0
  busy = 0
end
local function path() {path} end
function request() return wrk.format("GET", path()) end
function response(status, headers, body)
  if status == 503 then busy = busy + 1 elseif status ~= 200 then refused = refused + 1 end
end
function done(summary, latency, requests)
  local r, b = 0, 0
  for _, t in ipairs(threads) do r = r + t:get("refused"); b = b + t:get("busy") end
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, latency:percentile(50),
    latency:percentile(99), b, r + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""


@dataclass
class Run:
    p50: float  # ms
    p99: float  # ms
    requests: int
    statuses: Counter  # the answers that were not 200, by status (0: no answer)
    api_cpu: float  # CPU seconds of the API's processes over the run
    pg_cpu: float = float("nan")  # CPU seconds of the local PostgreSQL server's processes (nan: not local)

    def cpu_ms_per_request(self) -> float:
        return self.api_cpu / max(1, self.requests) * 1000

    def pg_ms_per_request(self) -> float:
        return self.pg_cpu / max(1, self.requests) * 1000

    @classmethod
    def of(cls, runs: list[Run]) -> Run:
        """Rounds of the same measurement as one: the median of their percentiles, the sum of the rest."""
        import statistics

        return cls(
            statistics.median(r.p50 for r in runs),
            statistics.median(r.p99 for r in runs),
            sum(r.requests for r in runs),
            sum((r.statuses for r in runs), Counter()),
            sum(r.api_cpu for r in runs),
            sum(r.pg_cpu for r in runs),
        )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process ``pid`` and of its children (uvicorn's workers), 0 when unknown."""
    return process_cpu_seconds(pid)


def measure_wrk(
    wrk: str,
    base: str,
    token: str,
    name: str,
    seconds: float,
    clients: int,
    pid: int | None,
    customers: int,
    pg_pid: int | None = None,
) -> Run:
    """wrk (one thread, ``clients`` connections, each sending its next request when the last is
    answered) for ``seconds`` on endpoint ``name``: p50/p99 of wrk's histogram, the API's CPU."""
    import subprocess
    import tempfile

    script = WRK_SCRIPT.format(token=token, path=WRK_REQUESTS[name].format(customers=customers))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="threadline-read-") as f:
        f.write(script)
        f.flush()
        c0, g0 = cpu_seconds(pid), cpu_seconds(pg_pid)
        out = subprocess.run(
            [wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "60s", "-s", f.name, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu, pg = cpu_seconds(pid) - c0, cpu_seconds(pg_pid) - g0
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    n, p50, p99, busy, other = (int(x) for x in line.split()[1:])
    statuses = Counter({k: v for k, v in ((503, busy), (0, other)) if v})
    return Run(p50 / 1000, p99 / 1000, n, statuses, cpu, pg if pg_pid else float("nan"))


def measure(base: str, token: str, make, requests: int, clients: int, pid: int | None) -> Run:
    """Without wrk: ``requests`` requests made by ``make`` from ``clients`` httpx clients in this
    process (heavier on the CPU the API shares than wrk)."""
    c0 = cpu_seconds(pid)
    latencies, statuses = asyncio.run(_measure(base, token, make, requests, clients))
    return Run(pct(latencies, 0.5), pct(latencies, 0.99), len(latencies), statuses, cpu_seconds(pid) - c0)


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


# wrk seconds per endpoint: warm-up, one client alone, CLIENTS clients (kept); the views take seconds a request.
SECONDS = {"kept": (2, 4, 8), "views": (0, 10, 20)}
COMPARE_ROUNDS = 2  # kept schemas: the trees' APIs alternate, round after round
WORKERS = (1, 2)  # this tree's API with 1 and 2 worker processes (THREADLINE_API_WORKERS)


@dataclass
class Api:
    """A read API process of some tree of the project, started for the bench."""

    base: str
    token: str
    pid: int | None
    stop: callable


def start_api(settings, tree=None) -> Api:
    """This tree's ``threadline serve api`` as the stack starts it, or (``tree``) that tree's code
    under the same settings (``--compare``)."""
    import os
    import subprocess

    import httpx

    from threadline.benchkit import PYTHON, tree_path
    from threadline.process import instances, wait_until
    from threadline.tools.stack import apps

    token = apps.token(settings, "api_tokens", "admin")
    base = apps.url(settings, "api")
    if tree is None:
        apps.start(settings, ("api",))
        pid = next((m.pid() for m in instances(settings, "api") if m.pid()), None)
        return Api(base, token, pid, lambda: apps.stop(settings, ("api",)))
    env = {
        **os.environ,
        **apps.with_local_tokens(settings).to_env(),
        **tree_path(tree),
        "THREADLINE_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [*PYTHON, "-m", "threadline.tools.cli", "serve", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(30)

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, what="api")
    except BaseException:
        stop()
        raise
    return Api(base, token, proc.pid, stop)


def postgres_pid(settings) -> int | None:
    """The local stack's PostgreSQL server (its backends are its children), None when not local."""
    from threadline.tools.stack.postgres import pgdata

    if settings.postgres.dsn is not None:
        return None
    try:
        return int((pgdata(settings) / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def measure_api(api: Api, variant: str, wrk: str | None, pg_pid: int | None) -> dict[str, tuple[Run, Run, float]]:
    """Per endpoint: (one client alone, CLIENTS clients, the 1-minute load average before them)."""
    import os

    warm, alone_s, load_s = SECONDS[variant]
    out = {}
    rng = random.Random(7)
    for name, make in endpoints(rng, CUSTOMERS).items():
        load = os.getloadavg()[0]
        if wrk is not None:
            if warm:
                measure_wrk(wrk, api.base, api.token, name, warm, CLIENTS, api.pid, CUSTOMERS)
            alone = measure_wrk(wrk, api.base, api.token, name, alone_s, 1, api.pid, CUSTOMERS, pg_pid)
            many = measure_wrk(wrk, api.base, api.token, name, load_s, CLIENTS, api.pid, CUSTOMERS, pg_pid)
        else:
            if warm:
                measure(api.base, api.token, make, 64, CLIENTS, api.pid)
            alone = measure(api.base, api.token, make, 100 if variant == "kept" else 12, 1, api.pid)
            many = measure(api.base, api.token, make, 400 if variant == "kept" else 96, CLIENTS, api.pid)
        out[name] = (alone, many, load)
    return out


def read_suite(ctx: BenchContext) -> list[Section]:
    """p50/p99 of the read API's hot endpoints at CONTACTS contacts of CUSTOMERS customers: the
    aggregates kept (as projected) with 1 and 2 API workers, beside ``--compare``'s tree's API on
    the same schemas (alternating rounds), and computed at read time (views)."""
    import os
    import re
    import shutil
    import tempfile
    from pathlib import Path

    from projectors.engine.schema import connect, create_schema
    from threadline.process import free_port

    wrk = shutil.which("wrk")
    pg_pid = postgres_pid(ctx.settings)
    prefix = re.sub(r"[^a-z0-9_]", "_", f"br{ctx.run_id}_".lower())[:24]
    data = f"{prefix}data"
    home = Path(tempfile.mkdtemp(prefix="threadline-read-"))
    if (ctx.settings.state_dir / "secrets").is_dir():
        shutil.copytree(ctx.settings.state_dir / "secrets", home / "secrets")
    conn = connect(ctx.settings, "bench-read")
    results: dict[str, list[dict[str, tuple[Run, Run, float]]]] = {}
    trees: list[tuple[str, Path | None, int, str]] = []  # label, tree, workers, schemas
    if ctx.compare is not None:
        trees.append((f"kept, {ctx.compare[0]} (1 worker)", ctx.compare[1], 1, "kept"))
    trees += [(f"kept, this tree ({w} worker{'s' if w > 1 else ''})", None, w, "kept") for w in WORKERS]

    def run(label: str, tree, workers: int, variant: str) -> None:
        settings = ctx.settings.model_copy(
            update={
                "home": home,
                "api_port": free_port(),
                "api_workers": workers,
                "projection_prefix": f"{prefix}{variant[0]}_",
                "log_level": "WARNING",
            }
        )
        with ctx.console.status(f"read API: {label} ..."):
            api = start_api(settings, tree)
            try:
                results.setdefault(label, []).append(measure_api(api, variant, wrk, pg_pid))
            finally:
                api.stop()

    try:
        create_schema(conn, "support", data, "bench")
        took = load(conn, data, CONTACTS, CUSTOMERS, ctx.console)
        sizes = {
            t: conn.execute(f"select count(*) from {data}.{t}").fetchone()[0]
            for t in ("contacts", "customers", "conversations", "conversation_events", "inbox_items", "engagement_days")
        }
        for variant, from_scratch in (("kept", False), ("views", True)):
            reader_schemas(conn, data, f"{prefix}{variant[0]}_", from_scratch)
        for _ in range(COMPARE_ROUNDS):
            for label, tree, workers, variant in trees:
                run(label, tree, workers, variant)
        run("views, this tree (1 worker)", None, 1, "views")
    finally:
        for (name,) in conn.execute(
            "select nspname from pg_namespace where nspname like %s order by nspname desc", (prefix + "%",)
        ).fetchall():
            conn.execute(f"drop schema {name} cascade")
        conn.close()
        shutil.rmtree(home, ignore_errors=True)
    rows = []
    missed: dict[str, list[str]] = {}
    for name in endpoints(random.Random(), CUSTOMERS):
        for label, rounds in results.items():
            alone = Run.of([r[name][0] for r in rounds])
            many = Run.of([r[name][1] for r in rounds])
            refused = many.statuses + alone.statuses
            rows.append(
                [
                    name,
                    label,
                    *(
                        f"{ms:,.1f}" if run.requests else "— (none answered)"
                        for run in (alone, many)
                        for ms in (run.p50, run.p99)
                    ),
                    f"{many.cpu_ms_per_request():,.2f}",
                    f"{many.pg_ms_per_request():,.2f}",
                    f"{many.requests:,}",
                    ", ".join(f"{n} × {code or 'no answer'}" for code, n in sorted(refused.items())) or "0",
                    " / ".join(f"{r[name][2]:.1f}" for r in rounds),
                ]
            )
            if label.startswith("kept") and many.p99 >= AIM_P99_MS:
                missed.setdefault(label, []).append(f"{name} {many.p99:,.0f} ms")
    client = (
        f"wrk (one thread, {CLIENTS} connections, each sending its next request when the last is answered; a C "
        f"client, so the {CLIENTS} clients take little of the CPU the API and PostgreSQL share with them)"
        if wrk
        else f"{CLIENTS} httpx clients in the bench's process (wrk is not installed: apt-get install wrk)"
    )
    warm, alone_s, load_s = SECONDS["kept"]
    return [
        Section(
            "Read API at a million contacts",
            [
                "endpoint",
                "API (schemas, tree, workers)",
                "1 client p50 ms",
                "1 client p99 ms",
                f"{CLIENTS} clients p50 ms",
                f"{CLIENTS} clients p99 ms",
                f"API CPU ms/request ({CLIENTS} clients)",
                f"PostgreSQL CPU ms/request ({CLIENTS} clients)",
                f"requests ({CLIENTS} clients)",
                "not 200",
                "load average (1 min) before, per round",
            ],
            rows,
            text=[
                f"{sizes['contacts']:,} contacts of {sizes['customers']:,} customers, {sizes['conversations']:,} "
                f"conversations ({sizes['inbox_items']:,} open), {sizes['conversation_events']:,} conversation "
                f"events, {sizes['engagement_days']:,} (day, channel) rows, generated in PostgreSQL (no Kafka). "
                f"The read API (`threadline serve api`) answers {client}: per endpoint, random customers, "
                f"{warm} s of warm-up, {alone_s} s of one client alone (the service time without queueing), then "
                f"{load_s} s of {CLIENTS} clients ({SECONDS['views'][1]} s and {SECONDS['views'][2]} s on the views). "
                "**kept**: the schemas as the projector keeps them (inbox_items, sla_clocks, customer_stats, "
                "engagement_days; projectors/aggregates.py); **views**: the same schemas with those tables replaced "
                "by views of their from-scratch queries (every read aggregates every row) and `customer_summary` as "
                "it was before `customer_stats`. All read the same rows (the projection schemas are views of one "
                f"data schema). The kept APIs run {COMPARE_ROUNDS} rounds, alternating"
                + (f" with {ctx.compare[0]}'s API (its code, the same schemas and settings)" if ctx.compare else "")
                + " (the load drifts alike for each); percentiles are the median of the rounds', CPU and "
                "requests their sum.",
            ],
            notes=[
                f"aim: p99 < {AIM_P99_MS:.0f} ms with {CLIENTS} clients for every endpoint (kept): "
                + "; ".join(
                    f"{label}: " + ("met" if label not in missed else "**not met**: " + ", ".join(missed[label]))
                    for label in results
                    if label.startswith("kept")
                )
                + ".",
                "loading: "
                + ", ".join(f"{k} {v:,.0f} s" for k, v in took.items())
                + " (the aggregates from every row, once, as an upgrade fills them).",
                f"Everything (PostgreSQL, the API, the {CLIENTS} clients) shares this {os.cpu_count()}-core machine; "
                "other work on it shows in the load average. The API: uvicorn (uvloop, httptools), "
                "THREADLINE_API_WORKERS processes, each with a pool of THREADLINE_API_POOL_SIZE connections "
                "(1 s to get one: 503 past it). API CPU ms/request: the user + system CPU of the API's processes "
                "over the run ÷ requests; PostgreSQL CPU ms/request: the same of the local server's processes "
                "(its backends, and its own background work).",
            ],
        )
    ]
