"""The stream processors' benchmark (part of ``threadline bench``): contacts/s through identity
resolution and conversation stitching, for one worker and for two, each as a ratio to aiokafka's
raw consume-and-produce rate measured in the same run on the same broker.

* pipeline: ``threadline worker`` processes (faust, RocksDB store when rocksdict is there), on
  topics of this run; the workers are started and their group is stable *before* the batch is
  produced, so the figure covers processing, not start-up or rebalancing. The time runs from
  the first record the route agent wrote to the graph topic to the last conversation event
  written, both read from the records' own timestamps (no polling error). Done means the group
  has committed every contacts.v1 and contacts.resolved.v1 offset.
* baseline: one AIOKafkaConsumer + AIOKafkaProducer (acks=all, idempotent) copying the same N
  records from one topic to another, timed from the group join to the last acknowledgment.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from streams.app import StreamTopics
from streams.batch_runner import stage_group
from threadline.benchkit import (
    RATE_COLUMNS,
    PYTHON,
    BenchContext,
    Rate,
    Section,
    aiokafka_config,
    compare_note,
    compared_runs,
    fmt_ratio,
    machine_busy_seconds,
    produce_kafka_python,
    rate_row,
    tree_path,
)
from threadline.process import terminate_tree

BASELINE_COPY_AIO = "consume+produce.aiokafka"
PIPELINE_TIMEOUT = 600.0
REPO = Path(__file__).resolve().parents[1]


def copy_aiokafka(settings, src: str, dst: str, events: int, timeout: float = 300.0) -> Rate:
    """Consume ``events`` records of ``src`` in a new group and produce each to ``dst``."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

    async def run() -> Rate:
        consumer = AIOKafkaConsumer(
            group_id=f"{src}.copy.{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            client_id="threadline-bench",
            **aiokafka_config(settings),
        )
        producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, linger_ms=5, client_id="threadline-bench", **aiokafka_config(settings)
        )

        class PauseOnAssign(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                consumer.pause(*assigned)

        await producer.start()
        await consumer.start()
        try:
            consumer.subscribe([src], listener=PauseOnAssign())
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
            count = size = 0
            t0, c0 = time.perf_counter(), time.process_time()
            consumer.resume(*consumer.assignment())
            futures = []
            while count < events:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        futures.append(await producer.send(dst, key=r.key, value=r.value))
                        size += len(r.value) + len(r.key or b"")
                    count += len(records)
            await producer.flush()
            await asyncio.gather(*futures)
            return Rate(count, time.perf_counter() - t0, size, cpu_seconds=time.process_time() - c0)
        finally:
            await consumer.stop()
            await producer.stop()

    return asyncio.run(asyncio.wait_for(run(), timeout))


def _create(admin, topics: StreamTopics, extra: list[str]) -> list[str]:
    specs = topics.specs()
    specs.update({name: (6, {"cleanup.policy": "delete"}) for name in extra})
    admin.create_topics(
        {n: {"num_partitions": p, "replication_factor": 1, "configs": cfg} for n, (p, cfg) in specs.items()}
    )
    return list(specs)


def _group_stable(admin, group: str, members: int) -> bool:
    desc = admin.describe_groups([group]).get(group, {})
    return desc.get("group_state") == "Stable" and len(desc.get("members", [])) == members


def _committed_all(admin, consumer, group: str, topic: str, at_least: int) -> bool:
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    ends = consumer.end_offsets(tps)
    committed = admin.list_group_offsets(group)
    committed = committed.get(group, committed) if isinstance(committed, dict) else committed
    done = sum(committed[tp].offset for tp in tps if tp in committed and committed[tp].offset >= 0)
    return sum(ends.values()) >= at_least and done == sum(ends.values())


def _first_timestamp(consumer, topic: str) -> int:
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    for _ in range(50):
        for records in consumer.poll(timeout_ms=200, max_records=1).values():
            return records[0].timestamp
    raise RuntimeError(f"no record on {topic}")


def _last_timestamp(consumer, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(tps)
    tps = [tp for tp in tps if ends[tp] > 0]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, ends[tp] - 1)
    last, seen = 0, set()
    deadline = time.monotonic() + 30
    while len(seen) < len(tps) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                last = max(last, r.timestamp)
                seen.add(tp)
    return last


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes and their children so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in (proc, *proc.children(recursive=True)):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:  # gone meanwhile: its CPU is not counted
            continue
    return total


def _stages_args(tree: Path | None, stages: str) -> list[str]:
    """The worker's ``--stages`` option; none for a tree from before workers could choose their
    stages (e322e28, the commit before the stream throughput work), whose worker runs all three."""
    if "stages" in ((tree or REPO) / "streams" / "cli.py").read_text():
        return ["--stages", stages]
    if set(stages.split(",")) != {"route", "identity", "conversations"}:
        raise RuntimeError(f"the workers of {tree} run every stage: they cannot run --stages {stages}")
    return []


def run_pipeline(
    ctx: BenchContext,
    workers: int,
    label: str,
    *,
    stages: str = "route,identity,conversations",
    source: str = "contacts",
    inspect: Callable[[StreamTopics], None] | None = None,
    tree: Path | None = None,
    batch: tuple[list[bytes], list[bytes]] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Rate, StreamTopics]:
    """``workers`` worker processes running ``stages``; the batch is produced to the ``source``
    topic (``contacts``: the whole pipeline; ``graph``: the identity stage alone, records as the
    route stage forwards them). Rate.cpu_seconds: the workers' CPU in the timed window.
    ``inspect``: called with the run's topics once the batch is processed, before they go.
    ``tree``: the workers run the code of that tree of the project (``--compare``). ``batch``:
    ``(values, keys)`` to produce instead of the bench batch; ``env``: more settings of the workers."""
    from threadline.topics import admin_client

    s, n = ctx.settings, ctx.events
    values, keys = batch or (ctx.batch.values, ctx.batch.keys)
    prefix = ctx.topic(label)
    topics = StreamTopics.prefixed(prefix)
    app_id = f"bench-{ctx.run_id}-{label}"
    admin = admin_client(s)
    names = _create(admin, topics, [])
    procs = []
    consumer = KafkaConsumer(**s.kafka.client_config())
    try:
        env = {
            **os.environ,
            **s.to_env(),
            "THREADLINE_LOG_LEVEL": "WARNING",
            "THREADLINE_LOG_FORMAT": "json",
            "THREADLINE_HOME": str(s.state_dir / "bench" / app_id),
            "THREADLINE_WORKER_OPS_PORT": "0",
            **tree_path(tree),
            **(env or {}),
        }  # several workers on one machine: no /metrics
        for i in range(workers):
            log = open(s.state_dir / "logs" / f"{app_id}-{i}.log", "ab")
            procs.append(
                subprocess.Popen(
                    [
                        *PYTHON,
                        "-m",
                        "threadline.tools.cli",
                        "worker",
                        "--app-id",
                        app_id,
                        "--topic-prefix",
                        prefix,
                        *_stages_args(tree, stages),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    start_new_session=True,
                )
            )
        # The groups the workers join: faust's (the stages that are faust agents) and, in a tree
        # whose route or identity stage has a runner of its own (``streams.batch_runner``), the stage's.
        runs, code = set(stages.split(",")), (tree or REPO) / "streams"
        own = {s for s in ("route", "identity") if s in runs and (code / f"{s}_runner.py").exists()}
        groups = [app_id] if runs - own else []
        groups += [stage_group(app_id, s) for s in sorted(own)]
        committer = {t: stage_group(app_id, s) for s, t in (("route", topics.contacts), ("identity", topics.graph))}
        committer = {t: g for t, g in committer.items() if g in groups}
        deadline = time.monotonic() + 120
        while not all(_group_stable(admin, g, workers) for g in groups):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{workers} stream worker(s) did not join group {app_id}")
            time.sleep(0.3)
        pids = [p.pid for p in procs]
        cpu0, busy0 = _tree_cpu(pids), machine_busy_seconds()
        if source == "graph":  # as the route stage forwards them: the same bytes, one partition
            produce_kafka_python(s, topics.graph, values[:n], keys[:n], headers=[("kind", b"contact")])
            done = [topics.graph]
        else:
            produce_kafka_python(s, topics.contacts, values[:n], keys[:n])
            done = [topics.contacts, topics.resolved]
        deadline = time.monotonic() + PIPELINE_TIMEOUT
        while not all(_committed_all(admin, consumer, committer.get(t, app_id), t, n) for t in done):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the pipeline did not process {n} contacts within {PIPELINE_TIMEOUT:.0f} s")
            time.sleep(0.5)
        cpu, busy = _tree_cpu(pids) - cpu0, machine_busy_seconds() - busy0
        t0 = _first_timestamp(consumer, topics.graph)
        t1 = _last_timestamp(consumer, topics.resolved if source == "graph" else topics.conversations)
        if inspect is not None:
            inspect(topics)
        size = sum(map(len, values[:n])) + sum(map(len, keys[:n]))
        return Rate(n, (t1 - t0) / 1000, size, cpu_seconds=cpu, machine_cpu_seconds=busy), topics
    finally:
        consumer.close()
        for p in procs:
            terminate_tree(p.pid, timeout=30)
        try:
            admin.delete_topics(names)
        except Exception as exc:  # cleanup: report, never mask the run's own failure
            ctx.console.print(f"[yellow]warning:[/] could not delete {prefix}.* topics: {exc}")
        admin.close()


def latest_values(settings, topic: str, quiet: float = 3.0, timeout: float = 120.0) -> dict[bytes, bytes]:
    """Each key's latest value on ``topic`` (a table's changelog: what its store holds per key;
    a tombstone drops the key), read once the topic had no new record for ``quiet`` seconds (the
    worker's clock timer may still be writing)."""
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        deadline, ends, still = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() - still < quiet and time.monotonic() < deadline:
            now = consumer.end_offsets(tps)
            if now != ends:
                ends, still = now, time.monotonic()
            time.sleep(0.5)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[bytes, bytes] = {}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for msgs in consumer.poll(timeout_ms=500).values():
                for m in msgs:
                    if m.value is None:
                        out.pop(m.key, None)
                    else:
                        out[m.key] = m.value
        return out
    finally:
        consumer.close()


def size_summary(sizes: list[int]) -> dict[str, float]:
    """count, mean, p50, p99 and max of ``sizes`` (bytes; nearest-rank percentiles)."""
    if not sizes:
        return {"count": 0, "mean": 0.0, "p50": 0, "p99": 0, "max": 0}
    ordered = sorted(sizes)

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(len(ordered) * q) - 1)]

    return {
        "count": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "max": ordered[-1],
    }


def size_row(label: str, sizes: list[int]) -> list[str]:
    """A report row: ``label``, then the count, mean, p50, p99 and max of ``sizes``."""
    m = size_summary(sizes)
    return [label, f"{m['count']:,}", f"{m['mean']:,.0f}", f"{m['p50']:,}", f"{m['p99']:,}", f"{m['max']:,}"]


def identity_plain(ctx: BenchContext) -> Rate:
    """``IdentityGraph.observe`` on a plain dict, in this process, over the decoded batch (the
    rules alone: no Kafka, no table, no codec)."""
    from schemas.codec import make_codec
    from streams.identity import IdentityGraph
    from streams.rules import rules_from_settings

    codec = make_codec(ctx.settings)
    records = [codec.decode(v).record for v in ctx.batch.values[: ctx.events]]
    graph = IdentityGraph({}, rules_from_settings(ctx.settings.streams).identity)
    t0, c0 = time.perf_counter(), time.process_time()
    for r in records:
        graph.observe(r)
    return Rate(
        len(records),
        time.perf_counter() - t0,
        ctx.batch.payload_bytes * len(records) // len(ctx.batch.values),
        cpu_seconds=time.process_time() - c0,
    )


def identity_suite(ctx: BenchContext) -> list[Section]:
    """The identity stage alone: the graph's single writer is the ceiling of the whole pipeline."""
    plain = identity_plain(ctx)
    other = ctx.compare[1] if ctx.compare is not None else None
    skipped = other is not None and not _stages_args(other, "route,identity,conversations")
    compared = (
        []
        if skipped  # a tree whose worker cannot run the stage alone
        else compared_runs(
            ctx,
            "identity stage",
            lambda tree, tag: run_pipeline(ctx, 1, f"identity-{tag}", stages="identity", source="graph", tree=tree)[0],
        )
    )
    with ctx.console.status("identity stage alone, one worker ..."):
        stage, _ = run_pipeline(ctx, 1, "identity1", stages="identity", source="graph")
    ctx.rates["streams.identity-stage"], ctx.rates["streams.identity-plain"] = stage, plain
    return [
        Section(
            "Stream processors: the identity stage alone",
            RATE_COLUMNS,
            [
                rate_row("IdentityGraph.observe on a dict (rules only)", plain),
                rate_row("identity stage in `threadline worker --stages identity`", stage, plain),
                *(rate_row(label, rate, plain) for label, rate in compared),
            ],
            text=[
                "The bench batch written to the identity graph topic as the route stage forwards it, processed "
                "by one worker running only the identity stage (decode, graph, tables with changelogs, "
                "contacts.resolved.v1 and identities.v1 written); timed from the first graph record to the last "
                "resolved contact. Beside it the graph's rules alone on a dict, in the bench process."
            ],
            notes=[
                "ratio: the stage's contacts/s ÷ the rules' contacts/s on a dict.",
                "CPU µs/event: the worker process's CPU (user + system) ÷ contacts; for the dict, this process's.",
                *compare_note(compared),
                *(
                    [f"not compared: the worker of {ctx.compare[0]} cannot run the identity stage alone (no --stages)."]
                    if skipped and ctx.compare is not None
                    else []
                ),
            ],
        )
    ]


WORKER_ROUNDS = 2  # one worker and two workers, alternately, this many rounds each


def streams_suite(ctx: BenchContext) -> list[Section]:
    from threadline.topics import admin_client

    s, n = ctx.settings, ctx.events
    src, dst = ctx.topic("copy-src"), ctx.topic("copy-dst")
    admin = admin_client(s)
    admin.create_topics({t: {"num_partitions": 6, "replication_factor": 1} for t in (src, dst)})
    try:
        with ctx.console.status("aiokafka consume-and-produce baseline ..."):
            produce_kafka_python(s, src, ctx.batch.values[:n], ctx.batch.keys[:n])
            copy_aiokafka(s, src, dst, min(n, ctx.warmup) or 1)  # warm-up, not counted
            base = copy_aiokafka(s, src, dst, n)
    finally:
        admin.delete_topics([src, dst])
        admin.close()
    ctx.rates[BASELINE_COPY_AIO] = base
    compared = compared_runs(ctx, "worker ×1", lambda tree, tag: run_pipeline(ctx, 1, f"streams1-{tag}", tree=tree)[0])
    ones: list[Rate] = []
    twos: list[Rate] = []
    for rnd in range(1, WORKER_ROUNDS + 1):  # alternately: the machine's load drifts alike for both
        with ctx.console.status(f"identity + stitching, one worker (round {rnd}) ..."):
            ones.append(run_pipeline(ctx, 1, f"streams1-r{rnd}")[0])
        with ctx.console.status(f"identity + stitching, two workers (round {rnd}) ..."):
            twos.append(run_pipeline(ctx, 2, f"streams2-r{rnd}")[0])
    ratios = [two.ratio(one) for one, two in zip(ones, twos, strict=True)]
    one, two = ones[0], twos[0]
    ctx.rates["streams.one-worker"], ctx.rates["streams.two-workers"] = one, two
    return [
        Section(
            "Stream processors: identity resolution and conversation stitching",
            RATE_COLUMNS,
            [
                rate_row("aiokafka consume + produce (baseline)", base),
                *(
                    rate_row(f"threadline worker ×{n}, round {rnd}", rate, base)
                    for rnd, pair in enumerate(zip(ones, twos, strict=True), 1)
                    for n, rate in zip((1, 2), pair, strict=True)
                ),
                *(rate_row(label, rate, base) for label, rate in compared),
            ],
            text=[
                "CPU µs/event of a worker row: the worker processes' CPU (user + system, summed) ÷ contacts; of the "
                "baseline: the bench process's CPU.",
                "The bench batch of contacts through `threadline worker` (route → identity graph → "
                "contacts.resolved → conversations, SLA clocks and tables with changelogs), each contact "
                "decoded twice and encoded at least twice with the project's codec; workers are separate "
                "processes on this machine, logging at WARNING. Baseline: the same records copied topic to "
                "topic by one aiokafka consumer and producer (acks=all), no codec work.",
            ],
            notes=[
                "ratio: contacts/s through the worker(s) ÷ aiokafka consume-and-produce records/s.",
                "two workers ÷ one worker, each round's against the one worker of its round: "
                f"{', '.join(fmt_ratio(r) for r in ratios)}; median {fmt_ratio(statistics.median(ratios))} "
                "(the identity graph has a single writer; routing and stitching are spread over the "
                "partitions).",
                machine_note(ones, twos),
                *compare_note(compared),
            ],
        )
    ]


def machine_note(ones: list[Rate], twos: list[Rate]) -> str:
    """The whole machine's busy CPU per contact in each round (workers, Kafka, PostgreSQL, the
    registry, the bench producing and watching), and the rate this machine's cores could give at
    that cost: the ceiling the workers share with everything else."""
    cores = os.cpu_count() or 1

    def one(rate: Rate) -> str:
        if not rate.machine_cpu_seconds or not rate.events:
            return "not measured"
        per = rate.machine_cpu_seconds / rate.events * 1e6
        return f"{per:,.0f} µs ({cores * 1e6 / per:,.0f}/s at {cores} busy cores)"

    rounds = "; ".join(
        f"round {i}: one worker {one(a)}, two workers {one(b)}" for i, (a, b) in enumerate(zip(ones, twos), 1)
    )
    return (
        "the machine's busy CPU per contact in the timed window, every process on it (workers, Kafka, "
        f"PostgreSQL, the registry, the bench), and the rate all its cores give at that cost: {rounds}."
    )


def sealed_batch(ctx: BenchContext) -> tuple[list[bytes], list[bytes]]:
    """The bench batch as the gateway writes it with privacy on: each contact sealed
    (``schemas.privacy.seal_contact``: pseudonyms, MACs, the personal fields in ``sealed``) and
    keyed by its primary identity's pseudonym. Keys from an in-memory key ring: the worker never
    asks the key store for a contact it can process."""
    import schemas
    from schemas.codec import make_codec
    from schemas.privacy import MasterKeyWrapper, MemoryKeyRing, Pseudonymizer, record_key, seal_contact
    from threadline.catalog import CONTACTS

    codec = make_codec(ctx.settings)
    ring = MemoryKeyRing(Pseudonymizer(os.urandom(32)), MasterKeyWrapper(os.urandom(32)))
    values, keys = [], []
    for value in ctx.batch.values[: ctx.events]:
        record = seal_contact(codec.decode(value).record, ring)
        values.append(codec.encode(CONTACTS.name, schemas.CONTACT, record))
        keys.append(record_key(record))
    return values, keys


PRIVACY_ROUNDS = 2


def privacy_streams_suite(ctx: BenchContext) -> list[Section]:
    """One worker over the bench batch in the clear (privacy off) and sealed as the gateway seals
    it (privacy on: the worker has the keys and the key store's role, for its dead letters),
    alternately, ``PRIVACY_ROUNDS`` rounds each, so the machine's load drifts alike for both."""
    import base64

    with ctx.console.status("sealing the bench batch as the gateway would ..."):
        sealed = sealed_batch(ctx)
    keys_env = {
        "THREADLINE_PRIVACY_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "THREADLINE_PRIVACY_PSEUDONYM_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    rows: list[tuple[str, Rate]] = []
    for rnd in range(1, PRIVACY_ROUNDS + 1):
        with ctx.console.status(f"one worker, contacts in the clear, round {rnd} ..."):
            rows.append((f"worker ×1, in the clear (round {rnd})", run_pipeline(ctx, 1, f"clear{rnd}")[0]))
        with ctx.console.status(f"one worker, sealed contacts, round {rnd} ..."):
            rate = run_pipeline(ctx, 1, f"sealed{rnd}", batch=sealed, env=keys_env)[0]
            rows.append((f"worker ×1, sealed, privacy on (round {rnd})", rate))

    def median(sealed_side: bool) -> tuple[float, float, float]:
        rates = [r for label, r in rows if ("sealed" in label) == sealed_side]
        return (
            statistics.median(r.per_second for r in rates),
            statistics.median(r.cpu_seconds / r.events * 1e6 for r in rates),  # type: ignore[operator]
            statistics.median(r.bytes / r.events for r in rates),
        )

    (rate_on, cpu_on, size_on), (rate_off, cpu_off, size_off) = median(True), median(False)
    ctx.rates["streams.privacy-on"] = next(r for label, r in rows if "sealed" in label)
    clear = rows[0][1]
    return [
        Section(
            "Stream processors with privacy on: CPU per contact, sealed against in the clear",
            RATE_COLUMNS,
            [rate_row(label, rate, clear) for label, rate in rows],
            text=[
                "One `threadline worker` (route → identity → conversations), the bench batch produced to its "
                "contacts topic in the clear, then sealed as the gateway seals it (pseudonyms for identity and "
                "fact values, MACs for provider ids and thread hints, the personal fields AES-GCM sealed in "
                "`sealed`, keyed by the primary identity's pseudonym); the worker with privacy on has the keys "
                "and the key store's role (it would seal a dead letter; the batch has none). Alternately, "
                f"{PRIVACY_ROUNDS} rounds each, in one run."
            ],
            notes=[
                "ratio: contacts/s ÷ the first row's.",
                f"medians: privacy on {rate_on:,.0f} contacts/s at {cpu_on:,.0f} µs CPU/contact "
                f"({size_on:,.0f} bytes/contact), off {rate_off:,.0f}/s at {cpu_off:,.0f} µs ({size_off:,.0f} "
                f"bytes): CPU per contact {(cpu_on / cpu_off - 1) * 100:+.0f}%, rate ×{rate_on / rate_off:.2f}.",
            ],
        )
    ]


def state_suite(ctx: BenchContext) -> list[Section]:
    """What the worker's tables hold after the bench batch: the conversation state per customer
    (the conversations table's changelog, the same bytes its store holds) and, beside it, the
    identity graph's two tables."""
    found: dict[str, dict[bytes, bytes]] = {}

    def read(topics: StreamTopics) -> None:
        for name in ("conversations_changelog", "graph_changelog", "contacts_changelog"):
            found[name] = latest_values(ctx.settings, getattr(topics, name))

    with ctx.console.status("identity + stitching, one worker, then its tables ..."):
        run_pipeline(ctx, 1, "state1", inspect=read)
    conv, graph = found["conversations_changelog"], found["graph_changelog"]
    rows = [
        size_row("conversations: state per customer", [len(v) for v in conv.values()]),
        size_row("identity graph: contact record", [len(v) for k, v in graph.items() if k.startswith(b'"e:')]),
        size_row("identity graph: node record", [len(v) for k, v in graph.items() if k.startswith(b'"n:')]),
        size_row("identity contacts: bytes of a contact", [len(v) for v in found["contacts_changelog"].values()]),
    ]
    total = sum(map(len, conv.values()))
    return [
        Section(
            "Stream processors: state per customer",
            ["table entry", "entries", "mean bytes", "p50 bytes", "p99 bytes", "max bytes"],
            rows,
            text=[
                f"After the bench batch ({ctx.events:,} contacts) through one `threadline worker` (all three stages, "
                "the batched stages), each table's latest value per key read back from its changelog: the bytes "
                "the worker's store holds (JSON). The conversation state of a customer holds the contacts of its "
                "live conversations, their published summaries, summaries of frozen ones, facts and the "
                "redelivery outbox (docs/streams.md, Bounded state). The batch's contacts are hours old, so "
                "every clock has fallen due by the end of the run. The bench batch has few contacts per customer; "
                "`tests/perf/conversation_state.py` measures a denser population on the pure core.",
            ],
            notes=[
                f"conversation state, all customers: {total:,} bytes; per contact: {total / ctx.events:,.0f} bytes."
            ],
        )
    ]
