"""Freshness: how soon what the gateway acknowledged is visible through the read API, with the
gateway, the worker, the projectors and the API each running as its own process (a tool: it
runs every feature together, so it lives above them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from threadline.benchkit import BenchContext, Section

FRESHNESS_RATES = (20, 50, 100, 200, 400)  # contacts/s offered to the gateway, one run each, in this order
FRESHNESS_SECONDS = 10  # how long each load runs
FRESHNESS_WARMUP = 150  # contacts (at 30/s) sent and seen before anything is measured
FRESHNESS_TARGET_MS = 250  # p99 the highest rate stated must stay under
FRESHNESS_BEHIND_MS = 2_000  # a p50 past this: the pipeline fell behind, no higher rate is offered
# rates also measured with the poller of before (a GET per pending contact, back to back), right
# after the same rate with the one-query poller: how much of the latency the poller's own load is
FRESHNESS_EACH_POLLER_RATES = (20, 50)
FRESHNESS_REACHED = 0.9  # a rate the gateway acknowledged below this share of the offered one is not sustained
SWEEP_SECONDS = 0.005  # a poller's pause between sweeps
EACH_MAX = 64  # the per-contact poller's GETs per sweep at most
APPS = ("gateway", "worker", "projector", "api")  # the processes whose CPU is counted per contact


@dataclass
class Run:
    """One load: the latencies seen, the contacts offered, the poller's requests, CPU seconds per app."""

    acked: dict[str, float]  # event id -> the gateway's 202 (time.monotonic())
    seen: dict[str, float]  # event id -> the read API's first 200 (time.monotonic())
    offered: int
    requests: int
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0  # time.time() - time.monotonic() during the run
    # event id -> when a plain consumer tailing contacts.resolved.v1 got it (time.monotonic())
    readable: dict[str, float] = field(default_factory=dict)
    sent_seconds: float = 0.0  # from the first webhook to the last 202
    sender_cpu: float = 0.0  # the load generator's CPU seconds (its process, start-up included)

    @property
    def reached(self) -> float:
        """The rate the gateway acknowledged: contacts ÷ seconds from the first webhook to the last 202."""
        return self.offered / self.sent_seconds if self.sent_seconds else 0.0

    @property
    def latencies(self) -> list[float]:
        return [self.seen[i] - self.acked[i] for i in self.seen]

    def pct(self, p: float) -> float | None:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None


Visible = Callable[[list[str]], Awaitable[set[str]]]
Confirm = Callable[[str], Awaitable[bool]]


class QueryPoller:
    """Asks once per sweep which of the pending contacts are visible, whatever their number: one
    query on the table the read API serves (``skeleton.contacts``, through the API's own role and
    connection string), then one ``GET /contacts/{event_id}`` per contact found, and the moment that
    GET answers 200 is the one measured. Its load follows the rate, not the backlog: one query per
    sweep, one GET per contact."""

    def __init__(self, visible: Visible, confirm: Confirm):
        self.visible = visible
        self.confirm = confirm
        self.requests = 0

    async def sweep(self, pending: dict[str, float], seen: dict[str, float]) -> None:
        if not pending:
            return
        self.requests += 1
        found = await self.visible(list(pending))
        if not found:
            return
        ids = [i for i in found if i in pending]
        self.requests += len(ids)
        answered = await asyncio.gather(*(self.confirm(i) for i in ids))
        now = time.monotonic()
        for event_id, ok in zip(ids, answered, strict=True):
            if ok:  # a 404 after the row was seen: stays pending, asked again next sweep
                del pending[event_id]
                seen[event_id] = now


class EachPoller:
    """The poller of before: a GET per pending contact, back to back, up to ``EACH_MAX`` a sweep;
    its load (and the read API's) grows with the backlog."""

    def __init__(self, confirm: Confirm):
        self.confirm = confirm
        self.requests = 0

    async def sweep(self, pending: dict[str, float], seen: dict[str, float]) -> None:
        for event_id in list(pending)[:EACH_MAX]:
            self.requests += 1
            if await self.confirm(event_id):
                del pending[event_id]
                seen[event_id] = time.monotonic()


def freshness_suite(ctx: BenchContext) -> list[Section]:
    """Gateway acknowledgment → visible through the read API, with every component in its own
    process on the live topics: gateway → contacts.v1 → stream worker → contacts.resolved.v1 →
    projector → PostgreSQL → read API. Signed chat webhooks go out at a fixed rate; a poller finds
    each acknowledged contact through the read API."""
    import shutil
    import tempfile
    from pathlib import Path

    from threadline.process import free_port
    from threadline.tools.demo import with_demo_secrets
    from threadline.tools.stack import apps
    from threadline.topics import apply

    home = Path(tempfile.mkdtemp(prefix="threadline-fresh-"))
    # the components' own state folder, with the local stack's generated secrets (PostgreSQL's
    # role passwords): they connect to the stack the bench runs on
    if (ctx.settings.state_dir / "secrets").is_dir():
        shutil.copytree(ctx.settings.state_dir / "secrets", home / "secrets")
    settings = with_demo_secrets(
        ctx.settings.model_copy(
            update={
                "home": home,
                "gateway_port": free_port(),
                "api_port": free_port(),
                "worker_ops_port": free_port(),
                "projector_ops_port": free_port(),
                "log_level": "WARNING",
            }
        )
    )
    apply(settings)
    rows: list[list[str]] = []
    hop_rows: list[list[str]] = []
    stated: int | None = None
    behind_at: int | None = None
    try:  # stopped whatever happens, a start that fails half-way included: no component outlives the run
        with ctx.console.status("starting gateway, stream worker, projectors and read API ..."):
            apps.start(settings)
        asyncio.run(_freshness_run(settings, f"{ctx.run_id}-warm", 30, FRESHNESS_WARMUP, "query"))
        for rate in FRESHNESS_RATES:
            if behind_at is not None:
                rows.append([f"{rate}/s", "—", "not offered", "", "", "", "", "", "", *[""] * len(APPS)])
                continue
            pollers = ("query", "each") if rate in FRESHNESS_EACH_POLLER_RATES else ("query",)
            for poller in pollers:
                ctx.console.print(f"freshness: {rate} contacts/s, {poller} poller ...")
                run = asyncio.run(
                    _freshness_run(settings, f"{ctx.run_id}-{rate}-{poller}", rate, rate * FRESHNESS_SECONDS, poller)
                )
                rows.append(_row(rate, poller, run))
                if poller != "query":
                    continue
                hops = hop_times(settings, run)
                hop_rows.append([f"{rate}/s", *(_spread(hops[h]) for h in HOPS)])
                p50, p99 = run.pct(0.5), run.pct(0.99)
                sustained = run.reached >= FRESHNESS_REACHED * rate and len(run.latencies) == run.offered
                if p99 is not None and p99 < FRESHNESS_TARGET_MS and sustained:
                    stated = rate
                if p50 is None or p50 > FRESHNESS_BEHIND_MS or not sustained:
                    behind_at = rate
    finally:
        apps.stop(settings)
    verdict = (
        f"Highest rate with p99 under {FRESHNESS_TARGET_MS} ms (one-query poller): **{stated} contacts/s**."
        if stated is not None
        else f"No rate offered had p99 under {FRESHNESS_TARGET_MS} ms."
    )
    return [
        Section(
            "Freshness: gateway acknowledgment → read API",
            [
                "offered rate",
                "poller",
                "acknowledged/s",
                "seen",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "poller requests/contact",
                *(f"{a} CPU µs/contact" for a in APPS),
            ],
            rows,
            text=[
                f"Signed chat webhooks into the gateway at each rate for {FRESHNESS_SECONDS} s, after "
                f"{FRESHNESS_WARMUP} warm-up contacts went through and were seen; each latency runs from the "
                "gateway's 202 (Kafka acknowledged) to the first 200 of `GET /contacts/{event_id}` (gateway → "
                "contacts.v1 → stream worker → contacts.resolved.v1 → projector → PostgreSQL → read API). Every "
                "component runs as its own process on this 2-core machine, beside Kafka, PostgreSQL, the registry, "
                "the load generator and the poller.",
                "Pollers: *query* asks once per sweep (5 ms apart) which pending contacts `skeleton.contacts` holds "
                "(the table the read API serves, through the API's own role), then sends one `GET /contacts/{id}` per "
                "contact found and takes the moment of its 200: one query per sweep and one GET per contact, "
                "whatever the backlog. *each* is the poller of before: a GET per pending contact, back to back, up to "
                f"{EACH_MAX} per sweep, so its load and the read API's grow with the backlog. The load generator "
                f"runs in a process of its own with at most {SENDERS} webhooks in flight; acknowledged/s is the rate "
                "the gateway's 202s reached (contacts ÷ first webhook to last 202). CPU µs/contact: the process's CPU "
                "(user + system, its children included) from the first webhook to the last contact seen, ÷ contacts; "
                "the projector process runs the support, sales, marketing and contacts projectors. A rate whose p50 "
                f"passes {FRESHNESS_BEHIND_MS:,} ms, or that the gateway acknowledged below "
                f"{FRESHNESS_REACHED:.0%} of the offered rate, is not sustained: no higher rate is offered after it.",
                verdict,
            ],
        ),
        Section(
            "Freshness: where the time goes",
            ["offered rate", *HOPS],
            hop_rows,
            text=[
                "p50 / p99 ms of each hop of the contacts seen (query poller), from the records' own timestamps: the "
                "gateway's record on contacts.v1 (its producer's clock at send), the route stage's copy on the graph "
                "topic, the identity stage's record on contacts.resolved.v1, the moment a plain consumer tailing "
                "contacts.resolved.v1 got it (Kafka's delivery), and the read API's 200. The first hop is before the "
                "gateway's 202, so outside the latency measured; a contact is only looked for once acknowledged, so "
                "the last hop is at least the rest of the first one (docs/projections.md, Freshness: the latency "
                "budget)."
            ],
        ),
    ]


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    v = sorted(values)
    return f"{v[len(v) // 2]:,.0f} / {v[min(len(v) - 1, int(0.99 * len(v)))]:,.0f}"


def _row(rate: int, poller: str, run: Run) -> list[str]:
    def ms(p: float) -> str:
        v = run.pct(p)
        return "—" if v is None else f"{v:,.0f}"

    return [
        f"{rate}/s",
        poller,
        f"{run.reached:,.0f}",
        f"{len(run.latencies):,} of {run.offered:,}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(1.0),
        f"{run.requests / run.offered:,.1f}",
        *(f"{run.cpu[a] / run.offered * 1e6:,.0f}" if a in run.cpu else "—" for a in APPS),
    ]


def _app_cpu(settings) -> dict[str, float]:
    """CPU seconds so far of each component process (its children included), by name."""
    from threadline.process import managed
    from threadline.tools.read_bench import cpu_seconds

    out = {}
    for name in APPS:
        pid = managed(settings, name).pid()
        if pid is not None:
            out[name] = cpu_seconds(pid)
    return out


# webhooks in flight at most (the load generator's connections to the gateway): measured on the
# loaded 2 cores, one gateway acknowledged 70/s with 1 in flight, 87/s with 8, 55/s with 64
SENDERS = 16


def _send_process(gateway: str, key: str, run_id: str, rate: int, total: int, out) -> None:
    """The load generator, in a process of its own so that its CPU (an HTTP client is not cheap)
    never delays the poller's moments: signed chat webhooks at ``rate`` for ``total`` contacts, at
    most ``SENDERS`` in flight (a webhook due while every slot waits on the gateway goes out late:
    the rate reached is reported). Sends ``("acked", [event ids], time.monotonic())`` per 202,
    ``("refused", status)``, then ``("done", seconds from the first webhook to the last 202)``
    through the pipe ``out``; the monotonic clock is the machine's, shared with the poller."""
    asyncio.run(_send(gateway, key, run_id, rate, total, out))


async def _send(gateway: str, key: str, run_id: str, rate: int, total: int, out) -> None:
    import json
    from datetime import UTC, datetime

    import httpx

    from connectors.signatures import signed_headers

    slots = asyncio.Semaphore(SENDERS)
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def post(i: int) -> None:
            body = json.dumps(
                {
                    "message_id": f"fresh-{run_id}-{i}",
                    "session_id": f"s-{i % 50}",
                    "visitor_id": f"v-{run_id}-{i % 50}",
                    "sent_at": datetime.now(UTC).isoformat(),
                    "text": "Can I change my delivery address?",
                }
            ).encode()
            try:
                r = await client.post(gateway, content=body, headers=signed_headers("chat", body, gateway, key))
            finally:
                slots.release()
            at = time.monotonic()
            if r.status_code != 202:
                out.send(("refused", r.status_code))
            else:
                out.send(("acked", [a["event_id"] for a in r.json()["accepted"]], at))

        t0 = time.monotonic()
        tasks = []
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
        out.send(("done", time.monotonic() - t0, time.process_time()))
    out.close()


async def _freshness_run(settings, run_id: str, rate: int, total: int, poller: str = "query") -> Run:
    import multiprocessing

    import httpx
    import psycopg

    from connectors.table import CONNECTORS
    from threadline.secrets import secret
    from threadline.tools.stack import apps

    gateway = f"http://{settings.endpoints.gateway_host}:{settings.endpoints.gateway_port}/webhooks/chat"
    api = f"http://{settings.endpoints.api_host}:{settings.endpoints.api_port}"
    key = secret(settings.connectors, CONNECTORS["chat"].secret or "") or ""
    pending: dict[str, float] = {}
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    refused: list[int] = []  # statuses of requests the gateway did not accept
    sent: list[float] = []  # seconds from the first webhook to the last 202, once the sender is done
    sender_cpu: list[float] = []  # the load generator's CPU seconds
    done_sending = asyncio.Event()
    loop = asyncio.get_running_loop()
    mp = multiprocessing.get_context("spawn")
    incoming, child_end = mp.Pipe(duplex=False)

    def received() -> None:
        while incoming.poll():
            try:
                message = incoming.recv()
            except EOFError:  # the sender is gone (done, or failed: then ``sent`` stays empty)
                loop.remove_reader(incoming.fileno())
                done_sending.set()
                return
            if message[0] == "acked":
                for event_id in message[1]:
                    pending[event_id] = acked[event_id] = message[2]
            elif message[0] == "refused":
                refused.append(message[1])
            else:
                sent.append(message[1])
                sender_cpu.append(message[2])

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    # the read API answers support's token (GET /contacts/{event_id} is a support route)
    auth = {"authorization": f"Bearer {apps.token(settings, 'api_tokens', 'support')}"}
    async with (
        httpx.AsyncClient(timeout=30, headers=auth, limits=limits) as a,
        await psycopg.AsyncConnection.connect(settings.effective_pg_api_dsn, autocommit=True) as db,
    ):

        async def confirm(event_id: str) -> bool:
            r = await a.get(f"{api}/contacts/{event_id}")
            if r.status_code not in (200, 404):  # not there yet is 404; anything else will not get better
                raise RuntimeError(f"freshness: the read API answered {r.status_code} to GET /contacts/{{id}}")
            return r.status_code == 200

        async def visible(ids: list[str]) -> set[str]:
            cur = await db.execute(
                "select event_id::text from skeleton.contacts where event_id = any(%s::uuid[])", (ids,)
            )
            return {row[0] for row in await cur.fetchall()}

        sweeper = QueryPoller(visible, confirm) if poller == "query" else EachPoller(confirm)

        async def poll() -> None:
            deadline = None
            while True:
                if done_sending.is_set():
                    deadline = deadline or time.monotonic() + 60
                    if not pending or time.monotonic() > deadline:
                        return
                await sweeper.sweep(pending, seen)
                await asyncio.sleep(SWEEP_SECONDS)

        tail = _Tail(settings)
        cpu0 = _app_cpu(settings)
        sender = mp.Process(
            target=_send_process,
            args=(gateway, key, run_id, rate, total, child_end),
            name="freshness-load",
            daemon=True,
        )
        sender.start()
        child_end.close()
        loop.add_reader(incoming.fileno(), received)
        try:
            await poll()
        finally:
            cpu1 = _app_cpu(settings)
            tail.stop()
            loop.remove_reader(incoming.fileno())
            sender.join(10)
            if sender.is_alive():
                sender.terminate()
            incoming.close()
    if refused:
        raise RuntimeError(
            f"freshness: the gateway refused {len(refused)} of {total} contacts (statuses {sorted(set(refused))})"
        )
    if not sent:
        raise RuntimeError(f"freshness: the load generator stopped (exit code {sender.exitcode})")
    cpu = {n: cpu1[n] - cpu0[n] for n in cpu1 if n in cpu0}
    return Run(
        acked,
        seen,
        total,
        sweeper.requests,
        cpu,
        wall=time.time() - time.monotonic(),
        readable=tail.got,
        sent_seconds=sent[0],
        sender_cpu=sender_cpu[0],
    )


class _Tail:
    """A plain consumer at the end of contacts.resolved.v1, on a thread: when each contact becomes
    readable there (the identity stage's record reached the broker), apart from when it was
    projected."""

    def __init__(self, settings):
        import threading

        from kafka import KafkaConsumer, TopicPartition

        from threadline.catalog import CONTACTS_RESOLVED

        self.got: dict[str, float] = {}
        self.stopping = threading.Event()
        self.consumer = KafkaConsumer(
            enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100, **settings.kafka.client_config()
        )
        parts = self.consumer.partitions_for_topic(CONTACTS_RESOLVED.name) or ()
        tps = [TopicPartition(CONTACTS_RESOLVED.name, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.thread = threading.Thread(target=self._run, name="freshness-tail", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for messages in self.consumer.poll(timeout_ms=100).values():
                now = time.monotonic()
                for m in messages:
                    eid = dict(m.headers or []).get("event_id", b"").decode()
                    self.got.setdefault(eid, now)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.consumer.close(autocommit=False)


HOPS = (
    "gateway produce → 202",
    "→ route stage out",
    "→ identity stage out",
    "→ readable on contacts.resolved.v1",
    "→ read API 200",
)


def hop_times(settings, run: Run) -> dict[str, list[float]]:
    """Where each contact's time went, in ms, from the records' own timestamps (the producers'
    clock, this machine's): the gateway's record on contacts.v1, the route stage's copy on the graph
    topic (the same bytes), the identity stage's contacts.resolved.v1 (header ``event_id``), and the
    poller's moments. Read back from the topics after the run."""
    from kafka import KafkaConsumer, TopicPartition

    from threadline.catalog import CONTACTS, CONTACTS_RESOLVED, IDENTITY_GRAPH

    if not run.seen:
        return {h: [] for h in HOPS}
    start_ms = int((min(run.acked.values()) + run.wall) * 1000) - 10_000
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **settings.kafka.client_config())
    try:
        topics = (CONTACTS.name, IDENTITY_GRAPH.name, CONTACTS_RESOLVED.name)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        found = consumer.offsets_for_times({tp: start_ms for tp in tps})
        end = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, found[tp].offset if found.get(tp) is not None else end[tp])
        produced: dict[str, int] = {}  # event id -> contacts.v1 timestamp
        ids: dict[bytes, str] = {}  # contacts.v1 value -> event id
        routed: dict[str, int] = {}
        resolved: dict[str, int] = {}
        later: list = []  # graph records read before their contact
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for m in messages:
                    if tp.topic == CONTACTS.name:
                        eid = dict(m.headers or []).get("event_id", b"").decode()
                        produced.setdefault(eid, m.timestamp)
                        ids[m.value] = eid
                    elif tp.topic == IDENTITY_GRAPH.name:
                        later.append(m)
                    else:
                        eid = dict(m.headers or []).get("event_id", b"").decode()
                        resolved.setdefault(eid, m.timestamp)
        for m in later:
            eid = ids.get(m.value)
            if eid is not None:
                routed.setdefault(eid, m.timestamp)
    finally:
        consumer.close(autocommit=False)
    out: dict[str, list[float]] = {h: [] for h in HOPS}
    for eid, seen in run.seen.items():
        t_c, t_g, t_r = produced.get(eid), routed.get(eid), resolved.get(eid)
        if t_c is None or t_g is None or t_r is None:
            continue
        out[HOPS[0]].append((run.acked[eid] + run.wall) * 1000 - t_c)
        out[HOPS[1]].append(t_g - t_c)
        out[HOPS[2]].append(t_r - t_g)
        readable = run.readable.get(eid)
        if readable is None:
            continue
        out[HOPS[3]].append((readable + run.wall) * 1000 - t_r)
        out[HOPS[4]].append((seen - readable) * 1000)
    return out
