"""``threadline ingest ...`` and ``threadline generate``: registered on the main CLI by ``register``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from threadline.commands import CommandGroups, fail, load_settings
from threadline.errors import KafkaUnavailable

ingest_app = typer.Typer(no_args_is_help=True, help="Import contacts from files and mailboxes.")
out = Console()
err = Console(stderr=True)


def _settings():
    return load_settings()


TOPICS = {
    "contacts_topic": typer.Option("contacts.v1", help="where contacts go"),
    "dlq_topic": typer.Option("ingest.dlq.v1", help="where what cannot be mapped goes"),
}


def _sink(settings, component: str, contacts_topic: str = "contacts.v1", dlq_topic: str = "ingest.dlq.v1"):
    from connectors.sink import Sink
    from schemas.codec import make_codec
    from schemas.keystore import make_keyring
    from threadline.kafka import BoundedProducer

    # Every send and wait bounded by THREADLINE_PRODUCE_DEADLINE_SECONDS: Kafka down → KafkaUnavailable.
    return Sink(
        BoundedProducer.from_settings(settings, client_id=f"threadline-{component}"),
        make_codec(settings),
        component=component,
        contacts_topic=contacts_topic,
        dlq_topic=dlq_topic,
        keyring=make_keyring(settings, cached=True),
    )


def _kafka_failed(exc: Exception) -> NoReturn:
    """Exit 1 naming Kafka: what was acknowledged is in the ledger, a re-run produces the rest."""
    fail(
        f"{exc}. The import stopped; what Kafka acknowledged is recorded and skipped by a re-run: "
        "run the same command again once Kafka is back",
        1,
    )


def _report(summary, title: str) -> None:
    table = Table("read", "produced", "duplicates", "rejected", title=title)
    row = summary.as_row()
    table.add_row(*(f"{row[k]:,}" for k in ("read", "produced", "duplicates", "rejected")))
    out.print(table)
    for where, reason in summary.rejected[:50]:
        err.print(f"[yellow]rejected[/] {where}: {reason}")
    if len(summary.rejected) > 50:
        err.print(f"[yellow]... and {len(summary.rejected) - 50} more rejected (all in ingest.dlq.v1)[/]")


def _import_file(path: Path, kind: str, records_fn, fresh: bool, topics: dict[str, str]) -> None:
    from connectors.base import MapContext
    from connectors.importer import Ledger, ledger_path, progress_bar, run_import

    s = _settings()
    data = path.read_bytes()
    ctx = MapContext.from_settings(s)
    sink = _sink(s, kind, **topics)
    ledger = Ledger(None if fresh else ledger_path(s.state_dir, kind))
    try:
        with progress_bar(err) as progress:
            task = progress.add_task(f"{kind} {path.name}", total=len(data), counts="")
            state = {"n": 0}

            def records():
                for where, end, item in records_fn(data, ctx):
                    state["n"] += 1
                    if state["n"] % 200 == 0:
                        progress.update(task, completed=end, counts=f"{state['n']:,} records")
                    yield where, item
                progress.update(task, completed=len(data), counts=f"{state['n']:,} records")

            summary = run_import(records(), sink, ledger, connector=kind, source=str(path))
    except KafkaUnavailable as exc:
        _kafka_failed(exc)
    finally:
        sink.producer.close(10)
    _report(summary, f"{kind}: {path}")


@ingest_app.command("mbox")
def ingest_mbox(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="an mbox file"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore what earlier imports produced (ids stay the same)"),
    contacts_topic: str = TOPICS["contacts_topic"],
    dlq_topic: str = TOPICS["dlq_topic"],
):
    """Import every message of an mbox file (re-runs skip what was already produced)."""
    from connectors import mbox

    _import_file(file, "mbox", mbox.records, fresh, {"contacts_topic": contacts_topic, "dlq_topic": dlq_topic})


@ingest_app.command("asterisk-cdr")
def ingest_cdr(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Asterisk cdr_csv Master.csv"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore what earlier imports produced (ids stay the same)"),
    contacts_topic: str = TOPICS["contacts_topic"],
    dlq_topic: str = TOPICS["dlq_topic"],
):
    """Import call detail records from Asterisk's CSV (re-runs skip what was already produced)."""
    from connectors import asterisk_cdr

    _import_file(
        file, "asterisk-cdr", asterisk_cdr.records, fresh, {"contacts_topic": contacts_topic, "dlq_topic": dlq_topic}
    )


@ingest_app.command("imap")
def ingest_imap(
    host: str = typer.Option(None, help="THREADLINE_IMAP_HOST"),
    port: int = typer.Option(None, help="THREADLINE_IMAP_PORT"),
    user: str = typer.Option(None, help="THREADLINE_IMAP_USER"),
    mailbox: str = typer.Option(None, help="THREADLINE_IMAP_MAILBOX"),
    ssl: bool = typer.Option(None, "--ssl/--no-ssl", help="THREADLINE_IMAP_SSL"),
    once: bool = typer.Option(False, "--once", help="one poll, then exit"),
    interval: float = typer.Option(30.0, help="seconds between polls"),
):
    """Poll an IMAP mailbox for new messages (password from THREADLINE_IMAP_PASSWORD[_FILE])."""
    from connectors.base import MapContext
    from connectors.imap import ImapAccount, ImapPoller, ImapUnavailable
    from threadline.secrets import secret

    s = _settings()
    account = ImapAccount(
        host or s.connectors.imap_host,
        port or s.connectors.imap_port,
        user or s.connectors.imap_user or "",
        secret(s.connectors, "imap_password") or "",
        mailbox or s.connectors.imap_mailbox,
        s.connectors.imap_ssl if ssl is None else ssl,
    )
    sink = _sink(s, "imap")
    poller = ImapPoller(account, sink, MapContext.from_settings(s), s.state_dir)
    try:
        while True:
            try:
                summary = poller.poll_once()
                _report(summary, repr(account))
            except ImapUnavailable as exc:
                err.print(f"[yellow]IMAP unavailable, retrying:[/] {exc}")
            except KafkaUnavailable as exc:
                _kafka_failed(exc)
            if once:
                break
            time.sleep(interval)
    finally:
        sink.producer.close(10)


def generate(
    customers: int = typer.Option(50, help="size of the seeded population"),
    seed: int = typer.Option(42, help="the same seed gives the same traffic"),
    rate: float = typer.Option(0.0, help="webhooks per second (0 = as fast as possible)"),
    direct: bool = typer.Option(False, "--direct", help="map in-process and produce, no gateway"),
    gateway: str = typer.Option(None, help="gateway base URL (default: the configured gateway)"),
):
    """Synthetic cross-channel traffic from a seeded population, as provider-native webhooks."""
    from connectors.base import MapContext
    from connectors.generate import journeys, population, render, send_direct, send_http
    from connectors.importer import progress_bar
    from connectors.table import SECRET_NAMES
    from threadline.secrets import secret

    s = _settings()
    steps = journeys(population(customers, seed), seed)
    items = (render(step) for step in steps)
    with progress_bar(err) as progress:
        task = progress.add_task("generate", total=len(steps), counts="")
        tick = lambda: progress.advance(task)  # noqa: E731
        if direct:
            sink = _sink(s, "generate")
            try:
                counts = send_direct(sink, lambda now: MapContext.from_settings(s, now), items, rate, tick)
            finally:
                sink.producer.close(10)
        else:
            base = gateway or f"http://{s.endpoints.gateway_host}:{s.endpoints.gateway_port}"
            counts = send_http(base, {n: secret(s.connectors, n) for n in SECRET_NAMES}, items, rate, tick)
    out.print(
        f"{len(steps):,} webhooks from {customers} customers: " + ", ".join(f"{k}: {v:,}" for k, v in counts.items())
    )
    if not direct and any(code >= 400 for code in counts):
        raise typer.Exit(1)


def serve_gateway():
    """The HTTP ingest gateway."""
    from connectors import server
    from connectors.gateway import build
    from threadline.process import claim

    s = load_settings()
    claim(s, "gateway")  # threadline stop / down find it, however it was started
    server.run(build(s), s)  # uvloop + httptools, proxy_headers off (connectors/server.py)


def register(groups: CommandGroups) -> None:
    groups.app.add_typer(ingest_app, name="ingest")
    groups.app.command("generate")(generate)
    groups.serve.command("gateway")(serve_gateway)
