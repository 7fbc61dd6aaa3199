"""Benchmark primitives the features' suites share (kernel: it names no feature).

    Rate                               events, seconds, bytes → events/s, MB/s, ratio
    produce_kafka_python / produce_aiokafka(settings, topic, values, keys) -> Rate
    consume_kafka_python / consume_aiokafka(settings, topic, events) -> Rate
    bench_topics(settings, names)      creates bench.* topics, deletes them on exit
    Section                            a table (or notes) of the report
    BenchContext                       what a suite gets: settings, console, the batch, baselines

A feature's suite is a function ``(BenchContext) -> list[Section]``; the benchmark runner
(``threadline/tools/bench/``) calls every feature's suites and writes the report. Nothing here
asserts a timing; every loop is bounded and fails loudly instead of hanging.
"""

from __future__ import annotations

import asyncio
import statistics
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from threadline.kafka import aiokafka_config  # noqa: F401 (streams.bench imports it from here)
from threadline.settings import Settings

DEFAULT_WARMUP = 1000
CONSUME_TIMEOUT = 120.0  # seconds a consume loop may take before it fails
PRODUCE_TIMEOUT = 120.0  # seconds a produce run (sends + flush) may take before it fails
JOIN_TIMEOUT = 60.0  # seconds to join a consumer group
TOPIC_PREFIX = "bench."

# Names under which run_bench stores the baseline rates in BenchContext.rates.
BASELINE_ENCODE = "codec.encode"
BASELINE_DECODE = "codec.decode"
BASELINE_PRODUCE_KP = "produce.kafka-python"
BASELINE_PRODUCE_AIO = "produce.aiokafka"
BASELINE_CONSUME_KP = "consume.kafka-python"
BASELINE_CONSUME_AIO = "consume.aiokafka"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """``events`` records (``bytes`` of payload) handled in ``seconds`` of wall-clock time."""

    events: int
    seconds: float
    bytes: int = 0
    startup_seconds: float | None = None  # set-up outside the timed window (e.g. group join)
    cpu_seconds: float | None = None  # CPU time of the measuring process in the timed window
    # the whole machine's busy CPU time in the timed window (every process: the measured ones,
    # Kafka, PostgreSQL, the registry, the bench itself, whatever else ran), where measured
    machine_cpu_seconds: float | None = None

    @property
    def cpu_us_per_event(self) -> float | None:
        """Process CPU µs per event: steadier than events/s on a shared machine."""
        return self.cpu_seconds / self.events * 1e6 if self.cpu_seconds is not None and self.events else None

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mb_per_second(self) -> float:
        """Payload megabytes (10^6 bytes) per second."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else float("inf")

    @property
    def mean_bytes(self) -> float:
        return self.bytes / self.events if self.events else 0.0

    def ratio(self, other: Rate) -> float:
        """How many times this rate's events/s is ``other``'s."""
        return self.per_second / other.per_second


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine has spent busy since boot (all but idle and I/O wait)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def process_cpu_seconds(pid: int | None, *, reaped: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` and of its live children (Linux /proc); with
    ``reaped`` also of the children that ended and were waited for (a server's closed
    connections). 0 when unknown."""
    if pid is None:
        return 0.0

    def stat(p) -> list[str]:
        return open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()

    try:
        pids = [pid] + [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        pids = [pid]
    total = 0
    for p in pids:
        try:
            fields = stat(p)
            total += (
                int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped and p == pid else 0)
            )
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def postgres_server_pid(conn) -> int | None:
    """The PostgreSQL server (postmaster) behind ``conn`` when it runs on this machine (its
    backends are its children), else None."""
    backend = conn.execute("select pg_backend_pid()").fetchone()[0]
    try:
        status = open(f"/proc/{backend}/status").read()
    except OSError:
        return None  # not on this machine
    if "postgres" not in open(f"/proc/{backend}/cmdline", "rb").read().decode(errors="replace"):
        return None  # a pid of this machine, not the server's backend
    ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)
    return ppid or None


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


def rate_row(name: str, rate: Rate, baseline: Rate | None = None) -> list[str]:
    """A table row: name, events, seconds, events/s, MB/s, and the ratio to ``baseline``."""
    cpu = rate.cpu_us_per_event
    return [
        name,
        f"{rate.events:,}",
        f"{rate.seconds:.3f}",
        fmt_rate(rate.per_second),
        f"{rate.mb_per_second:.2f}",
        fmt_ratio(rate.ratio(baseline)) if baseline else "—",
        f"{cpu:,.1f}" if cpu is not None else "—",
    ]


RATE_COLUMNS = ["measurement", "events", "seconds", "events/s", "MB/s", "ratio", "CPU µs/event"]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Section:
    """One part of the report: a title, paragraphs, an optional table, notes under it."""

    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        for para in self.text:
            out += [para, ""]
        if self.columns:
            out.append("| " + " | ".join(self.columns) + " |")
            out.append(
                "|"
                + "|".join(
                    "---:" if _numeric([r[i] for r in self.rows if i < len(r)]) else "---"
                    for i in range(len(self.columns))
                )
                + "|"
            )
            for row in self.rows:
                out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
            out.append("")
        for note in self.notes:
            out.append(f"- {note}")
        if self.notes:
            out.append("")
        return "\n".join(out)

    def rich_table(self) -> Table:
        table = Table(*self.columns, title=self.title)
        for row in self.rows:
            table.add_row(*[str(c) for c in row])
        return table


def _numeric(cells: Sequence[str]) -> bool:
    """A column of figures (digits, separators, ×, —) is right-aligned."""
    return bool(cells) and all(str(c) and set(str(c)) <= set("0123456789,.×— ") for c in cells)


@dataclass(frozen=True)
class EventBatch:
    """The encoded events every measurement of a run sends: values, keys and where they came from."""

    codec_name: str
    records: list[dict]
    keys: list[bytes]
    values: list[bytes]

    @property
    def payload_bytes(self) -> int:
        return sum(map(len, self.keys)) + sum(map(len, self.values))

    @property
    def mean_value_bytes(self) -> float:
        return sum(map(len, self.values)) / len(self.values)

    @property
    def mean_key_bytes(self) -> float:
        return sum(map(len, self.keys)) / len(self.keys)


# --------------------------------------------------------------------------------------------
# Kafka: topics, progress, clients
# --------------------------------------------------------------------------------------------


@contextmanager
def bench_topics(
    settings: Settings,
    names: Sequence[str],
    *,
    partitions: int | None = None,
    groups: list[str] | None = None,
    console: Console | None = None,
) -> Iterator[list[str]]:
    """Create ``names`` (each must start with ``bench.``); on exit delete them and ``groups``."""
    from threadline.catalog import EVENT_PARTITIONS
    from threadline.topics import admin_client

    bad = [n for n in names if not n.startswith(TOPIC_PREFIX)]
    if bad:
        raise ValueError(f"bench topics must start with {TOPIC_PREFIX!r}: {bad}")
    admin = admin_client(settings)
    try:
        admin.create_topics(
            {
                n: {
                    "num_partitions": partitions or EVENT_PARTITIONS,
                    "replication_factor": settings.kafka.replication_factor,
                }
                for n in names
            },
            timeout_ms=30_000,
            wait_for_metadata=True,
        )
        yield list(names)
    finally:
        try:
            if groups:
                try:
                    delete_groups = getattr(admin, "delete_groups", None) or admin.delete_consumer_groups
                    delete_groups(list(groups))
                except Exception as exc:  # cleanup: report, never mask the run's own failure
                    _warn(console, f"could not delete bench consumer groups {groups}: {exc}")
            try:
                admin.delete_topics(list(names), timeout_ms=30_000)
            except Exception as exc:  # cleanup: report, never mask the run's own failure
                _warn(console, f"could not delete bench topics {list(names)}: {exc}")
        finally:
            admin.close()


def _warn(console: Console | None, message: str) -> None:
    (console or Console(stderr=True)).print(f"[yellow]warning:[/] {message}")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class _Tick:
    """Advances a progress task at most every ``every`` events (the bar must not cost much)."""

    def __init__(self, progress: Progress | None, description: str, total: int, every: int = 1000):
        self.progress, self.every, self.pending = progress, every, 0
        self.task = progress.add_task(description, total=total) if progress else None

    def __call__(self, n: int = 1) -> None:
        if self.progress is None or self.task is None:
            return
        self.pending += n
        if self.pending >= self.every:
            self.progress.advance(self.task, self.pending)
            self.pending = 0

    def done(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, self.pending)
            self.pending = 0


# Producer settings shared by both clients, so their figures compare the libraries, not configs.
PRODUCER_LINGER_MS = 5  # threadline.kafka.make_producer's value
PRODUCER_BATCH_BYTES = 16384  # kafka-python's batch_size default = aiokafka's max_batch_size default


def _cycle(values: Sequence[bytes], keys: Sequence[bytes] | None, n: int):
    for i in range(n):
        j = i % len(values)
        yield (keys[j] if keys else None), values[j]


def _payload(values: Sequence[bytes], keys: Sequence[bytes] | None) -> int:
    return sum(map(len, values)) + (sum(map(len, keys)) if keys else 0)


def produce_kafka_python(
    settings: Settings,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes] | None = None,
    *,
    warmup: int = 0,
    warmup_topic: str | None = None,
    progress: Progress | None = None,
    timeout: float = PRODUCE_TIMEOUT,
    headers: list[tuple[str, bytes]] | None = None,
    **producer_overrides,
) -> Rate:
    """Send every value to ``topic`` with ``threadline.kafka.make_producer`` (acks=all,
    idempotent) and flush; the time covers the sends and the flush. ``warmup`` records go to
    ``warmup_topic`` (default: ``topic``) first, flushed, and are not counted. ``headers`` go
    on every record of the timed run."""
    from threadline.kafka import make_producer

    producer = make_producer(settings, client_id="threadline-bench", **producer_overrides)
    try:
        if warmup:
            for k, v in _cycle(values, keys, warmup):
                producer.send(warmup_topic or topic, key=k, value=v)
            producer.flush(timeout=timeout)
        tick = _Tick(progress, "produce kafka-python", len(values))
        futures = []
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        for k, v in _cycle(values, keys, len(values)):
            futures.append(producer.send(topic, key=k, value=v, headers=headers))
            tick()
        producer.flush(timeout=max(1.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - t0
        tick.done()
        failed = [f.exception for f in futures if not f.is_done or f.failed()]
        if failed:
            raise RuntimeError(f"kafka-python: {len(failed)} of {len(futures)} sends not acknowledged: {failed[0]}")
        return Rate(len(values), seconds, _payload(values, keys))
    finally:
        producer.close(timeout=10)


def produce_aiokafka(
    settings: Settings,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes] | None = None,
    *,
    warmup: int = 0,
    warmup_topic: str | None = None,
    progress: Progress | None = None,
    timeout: float = PRODUCE_TIMEOUT,
    **producer_overrides,
) -> Rate:
    """The same as ``produce_kafka_python`` with aiokafka's AIOKafkaProducer (acks='all',
    enable_idempotence=True, the same linger and batch size)."""
    from aiokafka import AIOKafkaProducer

    async def run() -> Rate:
        cfg = dict(
            acks="all",
            enable_idempotence=True,
            linger_ms=PRODUCER_LINGER_MS,
            max_batch_size=PRODUCER_BATCH_BYTES,
            request_timeout_ms=15_000,
            client_id="threadline-bench",
            **aiokafka_config(settings),
        )
        cfg.update(producer_overrides)
        producer = AIOKafkaProducer(**cfg)
        await producer.start()
        try:
            if warmup:
                for k, v in _cycle(values, keys, warmup):
                    await producer.send(warmup_topic or topic, key=k, value=v)
                await producer.flush()
            tick = _Tick(progress, "produce aiokafka", len(values))
            futures = []
            t0 = time.perf_counter()
            for k, v in _cycle(values, keys, len(values)):
                futures.append(await producer.send(topic, key=k, value=v))
                tick()
            await producer.flush()
            seconds = time.perf_counter() - t0
            tick.done()
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise RuntimeError(f"aiokafka: {len(failed)} of {len(futures)} sends not acknowledged: {failed[0]!r}")
            return Rate(len(values), seconds, _payload(values, keys))
        finally:
            await producer.stop()

    return asyncio.run(_bounded(run(), timeout, f"aiokafka produce to {topic}"))


async def _bounded(coro, timeout: float, what: str):
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} did not finish within {timeout:.0f} s") from None


def consume_kafka_python(
    settings: Settings,
    topic: str,
    events: int,
    *,
    group: str | None = None,
    progress: Progress | None = None,
    timeout: float = CONSUME_TIMEOUT,
    **consumer_overrides,
) -> Rate:
    """Read ``events`` records of ``topic`` with a KafkaConsumer in a new group from the earliest
    offset (``poll`` with the library's defaults). Partitions are paused until the group has
    joined, so the timed window is the fetching alone; the join goes to ``startup_seconds``.
    Raises TimeoutError if ``events`` records are not in hand within ``timeout`` seconds."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    consumer = KafkaConsumer(
        group_id=group or f"{topic}.kp.{uuid.uuid4().hex[:8]}",
        client_id="threadline-bench",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **{**settings.kafka.client_config(), **consumer_overrides},
    )

    class PauseOnAssign(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            consumer.pause(*assigned)

    try:
        t_start = time.perf_counter()
        consumer.subscribe([topic], listener=PauseOnAssign())
        join_deadline = time.monotonic() + min(JOIN_TIMEOUT, timeout)
        while not consumer.assignment():
            if time.monotonic() > join_deadline:
                raise TimeoutError(f"kafka-python consumer did not join a group on {topic} in time")
            consumer.poll(timeout_ms=100)
        startup = time.perf_counter() - t_start
        tick = _Tick(progress, "consume kafka-python", events, every=1)
        count = size = 0
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        consumer.resume(*consumer.assignment())
        while count < events:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"kafka-python consumer read {count} of {events} records of {topic} in {timeout:.0f} s"
                )
            for records in consumer.poll(timeout_ms=200).values():
                count += len(records)
                size += sum(len(r.value) + (len(r.key) if r.key else 0) for r in records)
                tick(len(records))
        seconds = time.perf_counter() - t0
        tick.done()
        return Rate(count, seconds, size, startup_seconds=startup)
    finally:
        consumer.close(autocommit=False)


def consume_aiokafka(
    settings: Settings,
    topic: str,
    events: int,
    *,
    group: str | None = None,
    progress: Progress | None = None,
    timeout: float = CONSUME_TIMEOUT,
    **consumer_overrides,
) -> Rate:
    """The same as ``consume_kafka_python`` with AIOKafkaConsumer and ``getmany``."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    async def run() -> Rate:
        consumer = AIOKafkaConsumer(
            group_id=group or f"{topic}.aio.{uuid.uuid4().hex[:8]}",
            client_id="threadline-bench",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **{**aiokafka_config(settings), **consumer_overrides},
        )

        class PauseOnAssign(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                consumer.pause(*assigned)

        t_start = time.perf_counter()
        await consumer.start()
        try:
            consumer.subscribe([topic], listener=PauseOnAssign())
            join_deadline = time.monotonic() + min(JOIN_TIMEOUT, timeout)
            while not consumer.assignment():
                if time.monotonic() > join_deadline:
                    raise TimeoutError(f"aiokafka consumer did not join a group on {topic} in time")
                await consumer.getmany(timeout_ms=100)
            startup = time.perf_counter() - t_start
            tick = _Tick(progress, "consume aiokafka", events, every=1)
            count = size = 0
            deadline = time.monotonic() + timeout
            t0 = time.perf_counter()
            consumer.resume(*consumer.assignment())
            while count < events:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"aiokafka consumer read {count} of {events} records of {topic} in {timeout:.0f} s"
                    )
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    count += len(records)
                    size += sum(len(r.value) + (len(r.key) if r.key else 0) for r in records)
                    tick(len(records))
            seconds = time.perf_counter() - t0
            tick.done()
            return Rate(count, seconds, size, startup_seconds=startup)
        finally:
            await consumer.stop()

    return asyncio.run(_bounded(run(), timeout + JOIN_TIMEOUT + 30, f"aiokafka consume of {topic}"))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class BenchContext:
    """What every suite gets: the stack's settings, the encoded events, the baselines so far."""

    settings: Settings
    console: Console
    events: int
    warmup: int
    run_id: str
    batch: EventBatch
    rates: dict[str, Rate] = field(default_factory=dict)
    # (label, tree): another tree of the project (a commit before a change) that suites which can
    # measure it side by side with this one do, e.g. the gateway's (``threadline bench --compare REF``)
    compare: tuple[str, Path] | None = None

    def topic(self, name: str) -> str:
        """A topic name of this run: ``bench.<run id>.<name>``."""
        return f"{TOPIC_PREFIX}{self.run_id}.{name}"

    def progress(self) -> Progress:
        return progress_bar(self.console)


# ``-P``: the working directory is not put first on the path (a bench started in a checkout would
# otherwise run that checkout's code whatever PYTHONPATH says).
PYTHON = (sys.executable, "-P")


def tree_path(tree: Path | None) -> dict[str, str]:
    """The environment under which ``PYTHON`` imports the project from ``tree`` (none: as installed)."""
    if tree is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}


COMPARE_ROUNDS = 2  # with --compare: the other tree, this one, the other, this one (the load drifts alike)


def compared_runs(ctx: BenchContext, what: str, run) -> list[tuple[str, Rate]]:
    """With ``ctx.compare``: ``run(tree)`` for the other tree and for this one, alternately,
    ``COMPARE_ROUNDS`` times each; labelled rows. Without: nothing."""
    if ctx.compare is None:
        return []
    label, tree = ctx.compare
    rows = []
    for rnd in range(1, COMPARE_ROUNDS + 1):
        for name, t in ((label, tree), ("this tree", None)):
            with ctx.console.status(f"{what}: {name}, round {rnd} ..."):
                rows.append((f"{what}, {name} (round {rnd})", run(t, f"{'cmp' if t else 'cur'}{rnd}")))
    return rows


def compare_note(rows: list[tuple[str, Rate]]) -> list[str]:
    """The medians of each side of a comparison: rate and CPU per contact, and their ratio."""
    if not rows:
        return []

    def side(mine: bool) -> tuple[float, float]:
        rates = [r for label, r in rows if label.split(", ")[-1].startswith("this tree") == mine]
        return (
            statistics.median(r.per_second for r in rates),
            statistics.median((r.cpu_seconds or 0.0) / r.events * 1e6 for r in rates),
        )

    (rate, cpu), (rate0, cpu0) = side(True), side(False)
    return [
        f"compared: this tree {rate:,.0f} contacts/s at {cpu:,.0f} µs CPU/contact against {rate0:,.0f}/s at "
        f"{cpu0:,.0f} µs (medians of {COMPARE_ROUNDS} rounds each): rate ×{rate / rate0:.2f}, CPU per contact "
        f"{(cpu / cpu0 - 1) * 100:+.0f}%."
    ]
