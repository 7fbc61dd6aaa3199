"""``threadline bench``: throughput figures on the local stack, written to docs/benchmarks.md.

The machine is shared and noisy, so every figure of a run is measured in that one run, side by
side, and the report gives ratios next to the absolute numbers: the ratios are what to compare
across runs. Nothing here asserts a timing; every loop is bounded and fails loudly instead of
hanging.

What one run measures, on the same batch of realistic contact events (``make_contacts``):

* the project's codec, pure CPU: encode and decode records/s;
* raw produce with kafka-python (``threadline.kafka.make_producer``) and with aiokafka, both
  acks=all and idempotent, timed up to and including the final flush;
* raw consume with kafka-python (``KafkaConsumer.poll``) and aiokafka (``getmany``), each in a
  new consumer group from the earliest offset, timed from the moment the group has joined
  until N records are in hand.

Reusable pieces for later benchmarks (pipeline throughput, projector rebuild, ...):

    Rate                               events, seconds, bytes → events/s, MB/s, ratio
    produce_kafka_python / produce_aiokafka(settings, topic, values, keys) -> Rate
    consume_kafka_python / consume_aiokafka(settings, topic, events) -> Rate
    bench_topics(settings, names)      creates bench.* topics, deletes them on exit
    Section, write_report(path, machine_info, sections)
    SUITES                             functions (BenchContext) -> [Section], run in order;
                                       a later benchmark appends its own and reads the
                                       baselines from ``ctx.rates`` (see BASELINE_*).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table

from threadline.kafka import aiokafka_config  # noqa: F401 (streams.bench imports it from here)
from threadline.settings import Settings

DEFAULT_WARMUP = 1000
CONSUME_TIMEOUT = 120.0   # seconds a consume loop may take before it fails
PRODUCE_TIMEOUT = 120.0   # seconds a produce run (sends + flush) may take before it fails
JOIN_TIMEOUT = 60.0       # seconds to join a consumer group
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


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


def rate_row(name: str, rate: Rate, baseline: Rate | None = None) -> list[str]:
    """A table row: name, events, seconds, events/s, MB/s, and the ratio to ``baseline``."""
    return [name, f"{rate.events:,}", f"{rate.seconds:.3f}", fmt_rate(rate.per_second),
            f"{rate.mb_per_second:.2f}", fmt_ratio(rate.ratio(baseline)) if baseline else "—"]


RATE_COLUMNS = ["measurement", "events", "seconds", "events/s", "MB/s", "ratio"]


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
            out.append("|" + "|".join("---:" if _numeric([r[i] for r in self.rows if i < len(r)]) else "---"
                                      for i in range(len(self.columns))) + "|")
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


HOW_TO_READ = (
    "All figures come from one run of `threadline bench` on one machine, measured side by side "
    "on the same batch of events. The machine is shared and its load varies, so absolute numbers "
    "(events/s, MB/s) move from run to run; the **ratios** (one figure divided by a baseline "
    "measured in the same run) are the figures to compare across runs and commits. Each "
    "measurement runs once after a short warm-up that is not counted. MB are 10^6 bytes of "
    "record payload (key + value), without Kafka's framing."
)


def write_report(path: Path, machine_info: dict[str, str], sections: Sequence[Section], *,
                 title: str = "Threadline benchmarks", how_to_read: str = HOW_TO_READ) -> Path:
    """Write the Markdown report: title, how to read it, the machine, then every section."""
    lines = [f"# {title}", "",
             "Generated by `threadline bench` (`make bench`); rerun it rather than editing this file.", "",
             "## How to read this", "", how_to_read, "",
             "## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine_info.items()]
    lines.append("")
    body = "\n".join(lines) + "\n" + "\n".join(s.markdown() for s in sections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body.rstrip() + "\n")
    return path


def machine_info() -> dict[str, str]:
    """CPU model, cores, RAM, kernel, Python, load average and the date (UTC)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "RAM": ram,
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "load average at start (1, 5, 15 min)": load,
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def crc32c_status() -> tuple[bool, str]:
    """Whether kafka-python computes record CRCs with the ``crc32c`` C extension."""
    try:
        import crc32c
    except ImportError:
        return False, "`crc32c` not importable: kafka-python falls back to pure Python CRC-32C (slow)"
    from kafka.record import util

    used = getattr(util, "crc32c_c", None) is crc32c.crc32c and util.calc_crc32c.__defaults__[0] is crc32c.crc32c
    if used:
        return True, f"crc32c {_version('crc32c')} imported and used by kafka-python (`kafka.record.util`)"
    return False, f"crc32c {_version('crc32c')} importable but kafka-python does not use it"


def aiokafka_extensions() -> bool:
    from aiokafka.record import default_records

    return "_crecords" in (default_records.DefaultRecordBatchBuilder.__module__ or "")


def versions_section(settings: Settings) -> Section:
    from threadline.stack import kafka as kafka_stack

    broker = kafka_stack.broker_version(settings)
    _, crc = crc32c_status()
    rows = [
        ["Kafka broker", f"{broker} at {settings.kafka_bootstrap}" if broker
         else f"unknown (not started from this state folder) at {settings.kafka_bootstrap}"],
        ["kafka-python", _version("kafka-python")],
        ["aiokafka", f"{_version('aiokafka')} ({'C extensions' if aiokafka_extensions() else 'pure Python records'})"],
        ["fastavro", _version("fastavro")],
        ["faust-streaming", _version("faust-streaming")],
        ["crc32c", crc],
    ]
    return Section("Versions", ["component", "version"], rows)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

_CAST = [  # local part, mail domain, phone prefix, social handle, language
    ("giulia.rossi", "example.it", "+39347", "giulia_r", "it"),
    ("sanne.devries", "example.nl", "+31612", "sanne_dv", "nl"),
    ("emre.kaya", "example.com.tr", "+90532", "emre.k", "tr"),
    ("kasia.nowak", "example.pl", "+48601", "kasia_n", "pl"),
    ("tom.baker", "example.co.uk", "+44770", "tombaker", "en"),
]

_TEXTS = {
    "it": ["Il mio ordine {o} è arrivato rotto, il pacco era aperto. Potete aiutarmi?",
           "Ho già mandato la foto per email: quando arriva il rimborso dell'ordine {o}?",
           "Buongiorno, vorrei cambiare l'indirizzo di consegna dell'ordine {o}."],
    "nl": ["Ik heb het formulier al ingevuld voor de skiverzekering, bestelling {o}.",
           "Mijn pakket {o} is nog steeds niet bezorgd, kunt u even kijken?",
           "Kan ik de verzekering ook per maand betalen? Klantnummer {o}."],
    "tr": ["Hızlı kargo, çok memnun kaldım. Sipariş {o} için teşekkürler!",
           "Sipariş {o} eksik geldi, bir ürün kutuda yoktu.",
           "İade sürecim ne durumda? Sipariş numaram {o}."],
    "pl": ["Kiedy dostanę zwrot pieniędzy za zamówienie {o}?",
           "Paczka {o} przyszła uszkodzona, co mam teraz zrobić?",
           "Chciałabym zmienić adres dostawy zamówienia {o}."],
    "en": ["Can I change my delivery address for order {o}? I am moving next week.",
           "Order {o} arrived with a cracked screen, I'd like a replacement please.",
           "I already called twice about order {o}, nobody got back to me."],
}

_CLOSINGS = {
    "it": ["Grazie mille per l'aiuto, aspetto una vostra risposta oggi stesso.",
           "Sono molto delusa, è la seconda volta che succede quest'anno."],
    "nl": ["Alvast bedankt, ik hoor graag vandaag nog van jullie.",
           "Dit is al de tweede keer dat ik hierover contact opneem."],
    "tr": ["Şimdiden teşekkürler, bugün içinde dönüş bekliyorum.",
           "Bu konuda ikinci kez yazıyorum, lütfen yardımcı olun."],
    "pl": ["Z góry dziękuję, proszę o odpowiedź jeszcze dzisiaj.",
           "Piszę w tej sprawie już drugi raz w tym tygodniu."],
    "en": ["Thanks in advance, I'd appreciate an answer today.",
           "This is the second time I'm contacting you about this."],
}

_CHANNELS = ["email", "sms", "whatsapp", "chat", "voice", "twitter", "instagram", "web_form", "review"]


def make_contacts(n: int, seed: int = 7, start: datetime | None = None) -> list:
    """``n`` realistic, varied contacts (``connectors.contact.ContactIn``), deterministic per seed.

    Five customer personas times 2,000 numbered variants, nine channels, texts in the five
    languages of the demo, thread hints, facts and consent where a real provider gives them.
    """
    from connectors.contact import ContactIn

    rng = random.Random(seed)
    t0 = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        local, domain, prefix, handle, lang = _CAST[i % len(_CAST)]
        variant = rng.randrange(2000)
        email = f"{local}{variant}@{domain}"
        phone = f"{prefix}{rng.randrange(10**6, 10**7)}"
        social = f"{handle}{variant}"
        order = str(100000 + rng.randrange(900000))
        channel = _CHANNELS[rng.randrange(len(_CHANNELS))]
        text = f"{rng.choice(_TEXTS[lang]).format(o=order)} {rng.choice(_CLOSINGS[lang])}"
        c: dict = {"connector": "bench", "channel": channel, "language": lang, "text": text,
                   "occurred_at": t0 + timedelta(seconds=i, milliseconds=rng.randrange(1000)),
                   "facts": [{"kind": "order_number", "value": order, "source": "text"}],
                   "metadata": {"provider_status": "received", "webhook": f"wh-{rng.randrange(10**8):08d}"}}
        pid = uuid.UUID(int=rng.getrandbits(128)).hex
        if channel == "email":
            c["provider_id"] = f"<{pid[:20]}@mail.{domain}>"
            c["identities"] = [{"kind": "email", "value": email, "primary": True}]
            c["subject"] = f"Re: order {order}"
            c["thread"] = {"message_id": c["provider_id"], "in_reply_to": f"<{pid[20:]}@mail.{domain}>"}
            if rng.random() < 0.5:
                c["attachments"] = [{"name": f"IMG_{rng.randrange(10**4):04d}.jpg", "content_type": "image/jpeg",
                                     "size_bytes": rng.randrange(10**5, 5 * 10**6),
                                     "sha256": uuid.UUID(int=rng.getrandbits(128)).hex * 2}]
        elif channel in ("sms", "whatsapp", "voice"):
            c["provider_id"] = f"{'CA' if channel == 'voice' else 'SM'}{pid}"
            c["identities"] = [{"kind": "phone", "value": phone, "primary": True}]
            if channel == "voice":
                c["thread"] = {"call_id": c["provider_id"]}
                c["metadata"] |= {"duration_s": str(rng.randrange(20, 900)), "queue": "support"}
        elif channel in ("twitter", "instagram", "review"):
            platform_ = "twitter" if channel == "twitter" else "instagram"
            c["provider_id"] = str(rng.randrange(10**18, 10**19))
            c["identities"] = [{"kind": "social", "value": social, "platform": platform_, "primary": True}]
            c["thread"] = {"reply_to_id": str(rng.randrange(10**18, 10**19))}
            if channel == "review":
                c["metadata"] |= {"rating": str(rng.randrange(1, 6))}
                c["consent"] = [{"purpose": "marketing", "channel": platform_, "granted": rng.random() < 0.5}]
        elif channel == "chat":
            c["provider_id"] = f"chat-{pid[:12]}-{rng.randrange(1, 40)}"
            c["identities"] = [{"kind": "chat_visitor", "value": f"v-{pid[12:20]}", "primary": True},
                               {"kind": "email", "value": email}]
            c["thread"] = {"session_id": f"chat-{pid[:12]}"}
        else:  # web_form
            c["provider_id"] = f"form-{pid[:16]}"
            c["identities"] = [{"kind": "email", "value": email, "primary": True},
                               {"kind": "phone", "value": phone}]
            c["consent"] = [{"purpose": "marketing", "channel": "email", "granted": True, "source": "form.checkbox"}]
        out.append(ContactIn.model_validate(c))
    return out


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


def build_records(n: int, seed: int = 7) -> tuple[list[dict], list[bytes]]:
    """Avro records (``to_record``) and their contacts.v1 keys (``partition_key``)."""
    from connectors.contact import partition_key, to_record

    contacts = make_contacts(n, seed)
    records, keys = [], []
    for c in contacts:
        records.append(to_record(c, c.occurred_at + timedelta(milliseconds=250)))
        keys.append(partition_key(c))
    return records, keys


def measure_codec(codec, records: list[dict], *, warmup: int = DEFAULT_WARMUP,
                  topic: str | None = None) -> tuple[list[bytes], Rate, Rate]:
    """Encode every record once (timed), then decode every value (timed). Pure CPU.

    ``topic`` is the topic the encoding is for (the Confluent codec registers ``<topic>-value``);
    it defaults to contacts.v1, so a bench run adds no subject to a registry.
    """
    import schemas
    from threadline.catalog import CONTACTS

    topic = topic or CONTACTS.name
    for r in records[:warmup]:
        codec.encode(topic, schemas.CONTACT, r)
    t0 = time.perf_counter()
    values = [codec.encode(topic, schemas.CONTACT, r) for r in records]
    encode = Rate(len(values), time.perf_counter() - t0, sum(map(len, values)))
    for v in values[:warmup]:
        codec.decode(v)
    t0 = time.perf_counter()
    decoded = [codec.decode(v) for v in values]
    decode = Rate(len(decoded), time.perf_counter() - t0, encode.bytes)
    if decoded and decoded[0].record["event_id"] != records[0]["event_id"]:
        raise RuntimeError("codec round trip changed the event id: the decode figures are meaningless")
    return values, encode, decode


# --------------------------------------------------------------------------------------------
# Kafka: topics, progress, clients
# --------------------------------------------------------------------------------------------

@contextmanager
def bench_topics(settings: Settings, names: Sequence[str], *, partitions: int | None = None,
                 groups: list[str] | None = None, console: Console | None = None) -> Iterator[list[str]]:
    """Create ``names`` (each must start with ``bench.``); on exit delete them and ``groups``."""
    from threadline.catalog import EVENT_PARTITIONS
    from threadline.topics import admin_client

    bad = [n for n in names if not n.startswith(TOPIC_PREFIX)]
    if bad:
        raise ValueError(f"bench topics must start with {TOPIC_PREFIX!r}: {bad}")
    admin = admin_client(settings)
    try:
        admin.create_topics({n: {"num_partitions": partitions or EVENT_PARTITIONS,
                                 "replication_factor": settings.replication_factor} for n in names},
                            timeout_ms=30_000, wait_for_metadata=True)
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
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), console=console)


class _Tick:
    """Advances a progress task at most every ``every`` events (the bar must not cost much)."""

    def __init__(self, progress: Progress | None, description: str, total: int, every: int = 1000):
        self.progress, self.every, self.pending = progress, every, 0
        self.task = progress.add_task(description, total=total) if progress else None

    def __call__(self, n: int = 1) -> None:
        if self.progress is None:
            return
        self.pending += n
        if self.pending >= self.every:
            self.progress.advance(self.task, self.pending)
            self.pending = 0

    def done(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, self.pending)
            self.pending = 0


# Producer settings shared by both clients, so their figures compare the libraries, not configs.
PRODUCER_LINGER_MS = 5        # threadline.kafka.make_producer's value
PRODUCER_BATCH_BYTES = 16384  # kafka-python's batch_size default = aiokafka's max_batch_size default


def _cycle(values: Sequence[bytes], keys: Sequence[bytes] | None, n: int):
    for i in range(n):
        j = i % len(values)
        yield (keys[j] if keys else None), values[j]


def _payload(values: Sequence[bytes], keys: Sequence[bytes] | None) -> int:
    return sum(map(len, values)) + (sum(map(len, keys)) if keys else 0)


def produce_kafka_python(settings: Settings, topic: str, values: Sequence[bytes],
                         keys: Sequence[bytes] | None = None, *, warmup: int = 0,
                         warmup_topic: str | None = None, progress: Progress | None = None,
                         timeout: float = PRODUCE_TIMEOUT, **producer_overrides) -> Rate:
    """Send every value to ``topic`` with ``threadline.kafka.make_producer`` (acks=all,
    idempotent) and flush; the time covers the sends and the flush. ``warmup`` records go to
    ``warmup_topic`` (default: ``topic``) first, flushed, and are not counted."""
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
            futures.append(producer.send(topic, key=k, value=v))
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


def produce_aiokafka(settings: Settings, topic: str, values: Sequence[bytes],
                     keys: Sequence[bytes] | None = None, *, warmup: int = 0,
                     warmup_topic: str | None = None, progress: Progress | None = None,
                     timeout: float = PRODUCE_TIMEOUT, **producer_overrides) -> Rate:
    """The same as ``produce_kafka_python`` with aiokafka's AIOKafkaProducer (acks='all',
    enable_idempotence=True, the same linger and batch size)."""
    from aiokafka import AIOKafkaProducer

    async def run() -> Rate:
        cfg = dict(acks="all", enable_idempotence=True, linger_ms=PRODUCER_LINGER_MS,
                   max_batch_size=PRODUCER_BATCH_BYTES, request_timeout_ms=15_000,
                   client_id="threadline-bench", **aiokafka_config(settings))
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


def consume_kafka_python(settings: Settings, topic: str, events: int, *, group: str | None = None,
                         progress: Progress | None = None, timeout: float = CONSUME_TIMEOUT,
                         **consumer_overrides) -> Rate:
    """Read ``events`` records of ``topic`` with a KafkaConsumer in a new group from the earliest
    offset (``poll`` with the library's defaults). Partitions are paused until the group has
    joined, so the timed window is the fetching alone; the join goes to ``startup_seconds``.
    Raises TimeoutError if ``events`` records are not in hand within ``timeout`` seconds."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    consumer = KafkaConsumer(group_id=group or f"{topic}.kp.{uuid.uuid4().hex[:8]}",
                             client_id="threadline-bench", auto_offset_reset="earliest",
                             enable_auto_commit=False, **{**settings.kafka_client_config(), **consumer_overrides})

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
                raise TimeoutError(f"kafka-python consumer read {count} of {events} records of {topic} "
                                   f"in {timeout:.0f} s")
            for records in consumer.poll(timeout_ms=200).values():
                count += len(records)
                size += sum(len(r.value) + (len(r.key) if r.key else 0) for r in records)
                tick(len(records))
        seconds = time.perf_counter() - t0
        tick.done()
        return Rate(count, seconds, size, startup_seconds=startup)
    finally:
        consumer.close(autocommit=False)


def consume_aiokafka(settings: Settings, topic: str, events: int, *, group: str | None = None,
                     progress: Progress | None = None, timeout: float = CONSUME_TIMEOUT,
                     **consumer_overrides) -> Rate:
    """The same as ``consume_kafka_python`` with AIOKafkaConsumer and ``getmany``."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    async def run() -> Rate:
        consumer = AIOKafkaConsumer(group_id=group or f"{topic}.aio.{uuid.uuid4().hex[:8]}",
                                    client_id="threadline-bench", auto_offset_reset="earliest",
                                    enable_auto_commit=False,
                                    **{**aiokafka_config(settings), **consumer_overrides})

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
                    raise TimeoutError(f"aiokafka consumer read {count} of {events} records of {topic} "
                                       f"in {timeout:.0f} s")
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

    def topic(self, name: str) -> str:
        """A topic name of this run: ``bench.<run id>.<name>``."""
        return f"{TOPIC_PREFIX}{self.run_id}.{name}"

    def progress(self) -> Progress:
        return progress_bar(self.console)


def codec_suite(ctx: BenchContext) -> list[Section]:
    """Encode and decode the batch with the project's codec (measured while the batch was built)."""
    b, enc, dec = ctx.batch, ctx.rates[BASELINE_ENCODE], ctx.rates[BASELINE_DECODE]
    event = Section("Event", ["property", "value"], [
        ["record", "`threadline.contact.Contact` (schemas/avro/contact, latest), built with "
                   "`connectors.contact.ContactIn` + `to_record`; nine channels, five languages"],
        ["codec", b.codec_name],
        ["mean encoded value", f"{b.mean_value_bytes:.1f} bytes "
                               f"(min {min(map(len, b.values))}, max {max(map(len, b.values))})"],
        ["mean key", f"{b.mean_key_bytes:.1f} bytes (`partition_key`: primary identity)"],
        ["events per measurement", f"{ctx.events:,} (+ {ctx.warmup:,} warm-up, not counted)"],
        ["topic partitions", f"{_partitions()} (as contacts.v1), replication factor {ctx.settings.replication_factor}"],
    ])
    codec = Section("Codec (pure CPU)", RATE_COLUMNS, [
        rate_row("encode", enc),
        rate_row("decode", dec, enc),
    ], text=[f"{b.codec_name}, one record at a time, as the gateway and the workers call it."],
       notes=["ratio: decode events/s ÷ encode events/s. MB/s counts encoded bytes.",
              "Decode resolves the writer schema to the latest reader schema, as consumers do."])
    return [event, codec]


def _partitions() -> int:
    from threadline.catalog import EVENT_PARTITIONS

    return EVENT_PARTITIONS


def raw_clients_suite(ctx: BenchContext) -> list[Section]:
    """Raw produce and consume with kafka-python and aiokafka: the baselines of every later figure."""
    s, b, n = ctx.settings, ctx.batch, ctx.events
    t_kp, t_aio, t_warm = ctx.topic("kafka-python"), ctx.topic("aiokafka"), ctx.topic("warmup")
    g_kp, g_aio = ctx.topic("consume.kafka-python"), ctx.topic("consume.aiokafka")
    g_warm_kp, g_warm_aio = ctx.topic("warmup.kafka-python"), ctx.topic("warmup.aiokafka")
    values, keys = b.values[:n], b.keys[:n]
    with bench_topics(s, [t_kp, t_aio, t_warm], groups=[g_kp, g_aio, g_warm_kp, g_warm_aio],
                      console=ctx.console):
        with ctx.progress() as progress:
            p_kp = produce_kafka_python(s, t_kp, values, keys, warmup=ctx.warmup, warmup_topic=t_warm,
                                        progress=progress)
            p_aio = produce_aiokafka(s, t_aio, values, keys, warmup=ctx.warmup, warmup_topic=t_warm,
                                     progress=progress)
            # Warm-up reads of the warm-up topic (not counted), then the timed reads of one topic.
            consume_kafka_python(s, t_warm, ctx.warmup, group=g_warm_kp)
            c_kp = consume_kafka_python(s, t_kp, n, group=g_kp, progress=progress)
            consume_aiokafka(s, t_warm, ctx.warmup, group=g_warm_aio)
            c_aio = consume_aiokafka(s, t_kp, n, group=g_aio, progress=progress)
    ctx.rates.update({BASELINE_PRODUCE_KP: p_kp, BASELINE_PRODUCE_AIO: p_aio,
                      BASELINE_CONSUME_KP: c_kp, BASELINE_CONSUME_AIO: c_aio})
    enc, dec = ctx.rates[BASELINE_ENCODE], ctx.rates[BASELINE_DECODE]

    figures = Section("Raw Kafka clients", RATE_COLUMNS, [
        rate_row("produce kafka-python", p_kp),
        rate_row("produce aiokafka", p_aio, p_kp),
        rate_row("consume kafka-python", c_kp),
        rate_row("consume aiokafka", c_aio, c_kp),
    ], text=["Pre-encoded values and keys, no codec work in the timed loop. Produce: acks=all, "
             f"idempotent, linger {PRODUCER_LINGER_MS} ms, {PRODUCER_BATCH_BYTES // 1024} KiB batches, "
             "no compression, time includes the final flush (every record acknowledged). "
             "kafka-python's producer is `threadline.kafka.make_producer`. Consume: a new group from "
             "the earliest offset, both clients on the same topic, library defaults for fetch sizes "
             "(kafka-python `poll`, max 500 records per call; aiokafka `getmany`, everything buffered), "
             "timed from the end of the group join to the N-th record."],
        notes=["ratio: aiokafka ÷ kafka-python for the same operation.",
               f"group join + first metadata (not in the timed window): kafka-python "
               f"{c_kp.startup_seconds:.2f} s, aiokafka {c_aio.startup_seconds:.2f} s."])
    ratios = Section("Ratios", ["ratio", "value", "what it says"], [
        ["produce kafka-python / aiokafka", fmt_ratio(p_kp.ratio(p_aio)),
         "> 1: kafka-python produces faster"],
        ["consume kafka-python / aiokafka", fmt_ratio(c_kp.ratio(c_aio)),
         "> 1: kafka-python consumes faster"],
        ["consume / produce, kafka-python", fmt_ratio(c_kp.ratio(p_kp)), "read speed over write speed"],
        ["consume / produce, aiokafka", fmt_ratio(c_aio.ratio(p_aio)), "read speed over write speed"],
        ["codec encode / produce kafka-python", fmt_ratio(enc.ratio(p_kp)),
         "< 1: encoding one event costs more than producing it"],
        ["codec decode / consume kafka-python", fmt_ratio(dec.ratio(c_kp)),
         "< 1: decoding one event costs more than consuming it"],
    ], notes=["Later benchmarks divide their figures by these baselines "
              "(`BenchContext.rates`, keys `produce.kafka-python`, `consume.aiokafka`, ...)."])
    return [figures, ratios]


# A later benchmark appends its own suite: def my_suite(ctx: BenchContext) -> list[Section].
SUITES: list[Callable[[BenchContext], list[Section]]] = [codec_suite, raw_clients_suite]


def _connectors_suite(ctx: BenchContext) -> list[Section]:
    from connectors.bench import connectors_suite

    return connectors_suite(ctx)


SUITES.append(_connectors_suite)  # gateway and mbox importer contacts/s (connectors/bench.py)


def _projection_suite(ctx: BenchContext) -> list[Section]:
    from projectors.bench import projection_rebuild_suite

    return projection_rebuild_suite(ctx)


SUITES.append(_projection_suite)


def _freshness_suite(ctx: BenchContext) -> list[Section]:
    from projectors.bench import freshness_suite

    return freshness_suite(ctx)


SUITES.append(_freshness_suite)  # gateway ack → read API latency, every component a process


def _streams_suite(ctx: BenchContext) -> list[Section]:
    from streams.bench import streams_suite

    return streams_suite(ctx)


SUITES.append(_streams_suite)  # identity + stitching contacts/s, one and two workers (streams/bench.py)


def prepare_batch(settings: Settings, events: int, warmup: int, console: Console) -> tuple[EventBatch, Rate, Rate]:
    """Build the records, encode them once with the project's codec (timed), decode them (timed)."""
    from schemas.codec import make_codec

    with console.status(f"building {events:,} contact records ..."):
        records, keys = build_records(events)
    codec = make_codec(settings)
    with console.status(f"encoding and decoding with {type(codec).__name__} ..."):
        values, enc, dec = measure_codec(codec, records, warmup=warmup)
    name = f"{type(codec).__name__} (THREADLINE_CODEC={settings.codec.value})"
    return EventBatch(name, records, keys, values), enc, dec


def run_bench(settings: Settings, *, events: int = 20000, out: Path = Path("docs/benchmarks.md"),
              console: Console | None = None, warmup: int = DEFAULT_WARMUP,
              suites: Sequence[Callable[[BenchContext], list[Section]]] | None = None) -> Path:
    """Bring the stack up, run every suite, print the tables and write the report to ``out``."""
    from threadline import stack

    if events < 1:
        raise ValueError("events must be at least 1")
    console = console or Console()
    console.rule("Threadline benchmarks")
    machine = machine_info()
    stack.up(settings, log=lambda m: console.print(f"[dim]{m}[/]"))
    ok, crc = crc32c_status()
    console.print(("[green]" if ok else "[bold red]") + f"crc32c:[/] {crc}")

    warmup = max(0, min(warmup, events))
    batch, enc, dec = prepare_batch(settings, events, warmup, console)
    ctx = BenchContext(settings, console, events, warmup,
                       run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}", batch=batch,
                       rates={BASELINE_ENCODE: enc, BASELINE_DECODE: dec})
    sections = [versions_section(settings)]
    for suite in (suites if suites is not None else SUITES):
        for section in suite(ctx):
            sections.append(section)
            if section.columns:
                console.print(section.rich_table())
            for note in section.notes:
                console.print(f"[dim]  {note}[/]")
    machine["load average at end (1, 5, 15 min)"] = (", ".join(f"{x:.2f}" for x in os.getloadavg())
                                                     if hasattr(os, "getloadavg") else "n/a")
    path = write_report(out, machine, sections)
    console.print(f"report written to [bold]{path}[/]")
    return path


__all__ = [
    "Rate", "Section", "EventBatch", "BenchContext", "SUITES", "write_report", "machine_info",
    "versions_section", "crc32c_status", "make_contacts", "build_records", "measure_codec",
    "bench_topics", "progress_bar", "produce_kafka_python", "produce_aiokafka",
    "consume_kafka_python", "consume_aiokafka", "run_bench",
]
