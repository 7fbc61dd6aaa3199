"""The loop every file importer and the IMAP poller share: map, produce, count, remember.

Records come in as ``(where, mapped)`` pairs (``where`` = "line 12"); a ``Rejected`` one is
reported with its line number, sent to ingest.dlq.v1 and the import carries on. Contacts whose
event id is in the ledger (produced and acknowledged by an earlier run) or already seen in this
run count as duplicates and are not produced again, so an import can be re-run safely. The
ledger is written only after Kafka acknowledged what it records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.base import Rejected
from connectors.contact import ContactIn, event_id
from connectors.sink import Sink
from threadline.errors import KafkaUnavailable
from threadline.kafka import BoundedProducer
from threadline.logging import get_logger

log = get_logger("threadline.importer")
FLUSH_EVERY = 2000


@dataclass
class ImportSummary:
    read: int = 0
    produced: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    event_ids: list[str] = field(default_factory=list)  # produced, in order

    def as_row(self) -> dict[str, int]:
        return {
            "read": self.read,
            "produced": self.produced,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
        }


class Ledger:
    """Event ids an importer has produced and Kafka acknowledged: one per line, append-only."""

    def __init__(self, path: Path | None):
        self.path = path
        self.ids: set[str] = set()
        if path is not None and path.exists():
            self.ids = {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def __contains__(self, eid: str) -> bool:
        return eid in self.ids

    def add(self, eids: list[str]) -> None:
        if not eids:
            return
        self.ids.update(eids)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write("".join(f"{e}\n" for e in eids))


def ledger_path(state_dir: Path, name: str) -> Path:
    return state_dir / "imports" / f"{name}.ids"


def run_import(
    records: Iterable[tuple[str, ContactIn | Rejected]],
    sink: Sink,
    ledger: Ledger,
    *,
    connector: str,
    source: str,
    progress_advance=None,
) -> ImportSummary:
    """Produce every mapped record; returns the summary once everything is acknowledged."""
    summary = ImportSummary()
    pending: list[tuple[str, object]] = []
    seen: set[str] = set()

    def flush() -> None:
        # At most THREADLINE_PRODUCE_DEADLINE_SECONDS (KafkaUnavailable); the ledger records
        # only what Kafka acknowledged, so a re-run after an outage produces the rest.
        if isinstance(sink.producer, BoundedProducer):
            sink.producer.wait([f for _, f in pending])
        else:  # a plain kafka-python producer (tests, benches)
            sink.producer.flush(60)
            failed = [f for _, f in pending if not f.is_done or f.failed()]
            if failed:
                raise KafkaUnavailable(
                    f"{len(failed)} of {len(pending)} records not acknowledged: {failed[0].exception}"
                )
        ledger.add([e for e, _ in pending if e])
        pending.clear()

    for where, item in records:
        summary.read += 1
        if isinstance(item, Rejected):
            summary.rejected.append((where, item.reason))
            log.info("record_rejected", connector=connector, where=where, reason=item.reason)
            pending.append(("", sink.send_dead_letter(connector, item, {"source": source, "where": where})))
        else:
            eid = event_id(item.connector, item.provider_id)
            if eid in ledger or eid in seen:
                summary.duplicates += 1
            else:
                seen.add(eid)
                pending.append((eid, sink.send(item)))
                summary.produced += 1
                summary.event_ids.append(eid)
        if progress_advance:
            progress_advance()
        if len(pending) >= FLUSH_EVERY:
            flush()
    flush()
    log.info("import_done", connector=connector, **summary.as_row())
    return summary


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        console=console or Console(stderr=True),
    )


def numbered_lines(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset after the line, the line with its ending)."""
    offset = 0
    for n, line in enumerate(data.splitlines(keepends=True), start=1):
        offset += len(line)
        yield n, offset, line
