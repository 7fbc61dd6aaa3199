"""``threadline export``: events of an event-time window, decoded, to Parquet or JSON lines.

Reads each topic from its first offset to the end offsets found at the start (a bounded read:
it ends even while producers go on), keeps the events whose ``occurred_at`` lies in
[from, to), sorts them by event time and writes one row per event. Common envelope fields are
columns; the whole record is in ``record`` (a JSON string in Parquet, so events of every schema
share one table; a nested object in JSON lines). pandas, DuckDB and pyarrow read both directly.
Records that do not decode are counted and left out (they are in the DLQs already).

Privacy (docs/privacy.md): records are opened (the reader codec); events of erased customers
carry the placeholder. ``pseudonymize`` keeps identities as pseudonyms (analysts' exports);
``purpose`` (``marketing``) leaves out the customers whose latest signal for it withdrew consent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from projectors import consent as consent_ledger
from schemas.codec import Codec
from schemas.keystore import OpeningCodec, make_reader_codec
from schemas.privacy import CONTACT_FULLNAME, pseudonymized
from threadline.errors import ConfigError, DecodeError
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.export")
FORMATS = ("parquet", "jsonl")
COLUMNS = (
    "topic",
    "partition",
    "offset",
    "schema",
    "event_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "customer_id",
    "channel",
    "record",
)


def _jsonable(v):
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def export_row(topic: str, partition: int, offset: int, schema: str, record: dict) -> dict:
    """One output row for one decoded event (pure)."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "schema": schema,
        "event_id": record.get("event_id"),
        "event_type": record.get("event_type"),
        "occurred_at": record.get("occurred_at"),
        "recorded_at": record.get("recorded_at"),
        "customer_id": record.get("customer_id"),
        "channel": record.get("channel"),
        "record": record,
    }


def consent_signals(schema: str, record: dict) -> list[tuple[str, consent_ledger.Signal]]:
    """(customer id, signal) of the consent a contact carries (pure); nothing from other records."""
    if schema != CONTACT_FULLNAME or not record.get("customer_id") or not record.get("occurred_at"):
        return []
    return [
        (
            record["customer_id"],
            consent_ledger.Signal(
                str(x["purpose"]),
                str(x.get("channel") or "any"),
                bool(x["granted"]),
                x.get("source"),
                record["occurred_at"],
                str(record["event_id"]),
            ),
        )
        for x in record.get("consent") or []
        if x.get("purpose") and x.get("granted") is not None
    ]


def withdrawn_customers(signals: list[tuple[str, consent_ledger.Signal]], purpose: str) -> set[str]:
    """The customer ids whose latest ``purpose`` signal (event time) withdrew consent (pure)."""
    per: dict[str, list[consent_ledger.Signal]] = {}
    for cid, signal in signals:
        per.setdefault(cid, []).append(signal)
    return {cid for cid, sigs in per.items() if consent_ledger.withdrawn(sigs, purpose)}


def in_window(occurred_at: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    """[start, end) on event time; an open side is unbounded."""
    if occurred_at is None:
        return False
    return (start is None or occurred_at >= start) and (end is None or occurred_at < end)


def sort_key(row: dict):
    return (row["occurred_at"], row["topic"], row["partition"], row["offset"])


@dataclass(frozen=True)
class ExportResult:
    rows: int
    read: int
    undecodable: int
    path: Path


def read_window(
    settings: Settings,
    topics: list[str],
    start: datetime | None,
    end: datetime | None,
    codec: Codec | None = None,
    timeout: float = 120.0,
    *,
    pseudonymize: bool = False,
    purpose: str | None = None,
) -> tuple[list[dict], int, int]:
    """Rows of ``topics`` in [start, end). ``pseudonymize``: identities as the log has them
    (``schemas.privacy.pseudonymized``; privacy on only); ``purpose``: the rows of customers whose
    latest consent signal for it withdrew consent left out (the signals of every contact read
    count, in the window or not)."""
    import time

    codec = make_reader_codec(settings, codec)  # opens sealed records (docs/privacy.md)
    if pseudonymize and not isinstance(codec, OpeningCodec):
        raise ConfigError(
            "--pseudonymize needs privacy on (THREADLINE_PRIVACY_MASTER_KEY): identities are pseudonyms only then"
        )
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **settings.kafka.client_config())
    rows, read, bad = [], 0, 0
    signals: list[tuple[str, consent_ledger.Signal]] = []
    try:
        tps = []
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if not parts:
                raise ConfigError(f"topic {t} does not exist")
            tps += [TopicPartition(t, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        consumer.assign(list(todo))
        if todo:
            consumer.seek_to_beginning(*todo)
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"export: {len(todo)} partitions not read to their end in {timeout:.0f} s")
            for tp, messages in consumer.poll(timeout_ms=500, max_records=5000).items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        break
                    read += 1
                    try:
                        d = codec.decode(m.value)
                        record = (
                            pseudonymized(d.record, codec.codec.decode(m.value).record) if pseudonymize else d.record
                        )
                    except DecodeError:
                        bad += 1
                        continue
                    if purpose:
                        signals += consent_signals(d.schema_fullname, record)
                    if in_window(record.get("occurred_at"), start, end):
                        rows.append(export_row(m.topic, m.partition, m.offset, d.schema_fullname, record))
                if consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close()
    if purpose:
        gone = withdrawn_customers(signals, purpose)
        rows = [r for r in rows if r["customer_id"] not in gone]
    rows.sort(key=sort_key)
    return rows, read, bad


def write_rows(rows: list[dict], fmt: str, path: Path) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=_jsonable, ensure_ascii=False) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.timestamp("ms", tz="UTC")
    schema = pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("schema", pa.string()),
            ("event_id", pa.string()),
            ("event_type", pa.string()),
            ("occurred_at", ts),
            ("recorded_at", ts),
            ("customer_id", pa.string()),
            ("channel", pa.string()),
            ("record", pa.string()),
        ]
    )
    columns = {c: [r[c] for r in rows] for c in COLUMNS}
    columns["record"] = [
        json.dumps(r, default=_jsonable, ensure_ascii=False, sort_keys=True) for r in columns["record"]
    ]
    pq.write_table(pa.table(columns, schema=schema), path)


def export(
    settings: Settings,
    topics: list[str],
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    path: Path,
    codec: Codec | None = None,
    *,
    pseudonymize: bool = False,
    purpose: str | None = None,
) -> ExportResult:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}")
    if purpose is not None and purpose not in consent_ledger.PURPOSES:
        raise ConfigError(f"--purpose must be one of {', '.join(consent_ledger.PURPOSES)}")
    rows, read, bad = read_window(settings, topics, start, end, codec, pseudonymize=pseudonymize, purpose=purpose)
    write_rows(rows, fmt, Path(path))
    log.info(
        "export_written",
        topics=topics,
        rows=len(rows),
        read=read,
        undecodable=bad,
        format=fmt,
        pseudonymized=pseudonymize,
        purpose=purpose,
    )
    return ExportResult(len(rows), read, bad, Path(path))
