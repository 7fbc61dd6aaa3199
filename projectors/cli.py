"""``threadline project``, ``threadline replay``, ``threadline export`` (registered on the main CLI)."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from projectors.ddl import PROJECTIONS
from threadline.commands import CommandGroups, fail, load_settings
from threadline.errors import ConfigError, ThreadlineError

err = Console(stderr=True)
STALL_LIMIT = 120.0  # seconds a started projector's loop may take for one turn before /livez fails


_settings = load_settings
_fail = fail


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 moment with a time zone (2026-11-22T10:00:00Z)."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ConfigError(f"{option}: {value!r} needs a time zone (e.g. {value}Z)")
    return t


def _sources(contacts: str | None, conversations: str | None, identities: str | None):
    from projectors.engine.runner import Sources

    d = Sources()
    return Sources(contacts or d.contacts, conversations or d.conversations, identities or d.identities)


def process_probes(runners: list, threads: list[threading.Thread], clock=time.monotonic, stall: float = STALL_LIMIT):
    """/livez and the ``projectors`` readiness probe of a process running ``runners`` in ``threads``."""

    def liveness() -> str | None:
        for r, t in zip(runners, threads):
            inst = r.instruments
            if t.ident is not None and not t.is_alive():
                return f"{inst.component} stopped"
            if inst.started and clock() - inst.heartbeat > stall:
                return f"{inst.component}: no turn of its loop for {stall:g} s"
        return None

    def running() -> None:
        waiting = [r.instruments.component for r in runners if not r.instruments.started]
        if waiting:
            raise RuntimeError(
                "not projecting yet (starting, or standby behind another instance): " + ", ".join(waiting)
            )

    return liveness, running


def serve_ops(s, runners: list, threads: list[threading.Thread]):
    """/metrics, /livez, /readyz of the projector process (THREADLINE_PROJECTOR_OPS_PORT; 0: none)."""
    from threadline import ops

    liveness, running = process_probes(runners, threads)
    readiness = ops.Readiness(
        "projector",
        [*ops.kafka_checks(s), ops.Check("postgres", ops.postgres_probe(s)), ops.Check("projectors", running)],
    )
    return ops.serve(
        s.endpoints.ops_host,
        s.endpoints.projector_ops_port,
        component="projector",
        liveness=liveness,
        readiness=readiness,
        variable="THREADLINE_PROJECTOR_OPS_PORT",
    )


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} events/s" if task.speed else "— events/s", style="cyan")


def progress_bar(label: str) -> Progress:
    """The progress display of a long command on stderr: label, bar, done of total, rate, time."""
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), console=err
    )


def serve_api():
    """The read API: THREADLINE_API_WORKERS processes on one port."""
    import uvicorn

    from projectors.api import create_app
    from threadline import serving
    from threadline.process import claim

    s = _settings()
    claim(s, "api")  # threadline stop / down find it, however it was started
    options = dict(
        host=s.endpoints.api_host,
        port=s.endpoints.api_port,
        loop=serving.LOOP,
        http=serving.HTTP_PROTOCOL,  # one write per response (by name: worker processes import it)
        timeout_keep_alive=serving.KEEP_ALIVE_SECONDS,
        server_header=False,
        log_config=None,
        access_log=False,
    )
    if s.endpoints.api_workers == 1:
        uvicorn.run(create_app(s, served=True), **options)
    else:  # each worker process makes the app from the same environment (--home is in it)
        uvicorn.run("projectors.api:app_from_environment", factory=True, workers=s.endpoints.api_workers, **options)


privacy_app = typer.Typer(no_args_is_help=True, help="Erasure and right of access (docs/privacy.md).")


@privacy_app.command("erase")
def privacy_erase(
    identity: str = typer.Option(..., "--identity", help="kind:[platform:]value of any identity of the customer"),
    settle: float = typer.Option(2.0, "--settle", help="seconds before the read models are purged again"),
    topic_prefix: str = typer.Option("", "--topic-prefix", help="the stream topics' prefix, as given to the worker"),
):
    """Erase a customer: destroy the data keys of every identity of its component, drop its read-model
    rows, tombstone its compacted keys, emit an erased event. Prints a JSON report (no personal data)."""
    import json

    import psycopg

    from projectors.erasure import NotFound, PrivacyOff, run_erase

    s = _settings()
    try:
        report = run_erase(s, identity, settle_seconds=settle, topic_prefix=topic_prefix)
    except ValueError as exc:
        _fail(str(exc), 2)
    except PrivacyOff as exc:
        _fail(str(exc), 2)
    except NotFound as exc:
        _fail(f"{exc}: nothing erased (is the projector caught up?)", 1)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except ThreadlineError as exc:
        _fail(f"{exc}: the erasure may be partial; run the command again", 1)
    except psycopg.OperationalError as exc:
        _fail(f"PostgreSQL did not answer ({type(exc).__name__}): the erasure may be partial; run the command again", 1)
    typer.echo(json.dumps(report.as_json(), indent=2))


@privacy_app.command("export")
def privacy_export(
    identity: str = typer.Option(..., "--identity", help="kind:[platform:]value of any identity of the customer"),
    output: Path = typer.Option(None, "--output", "-o", help="write the bundle here (default: stdout)"),
):
    """Right of access: one JSON bundle of the customer's contacts, conversations, identities and facts."""
    import json

    from projectors.erasure import NotFound, run_export

    s = _settings()
    try:
        data = run_export(s, identity)
    except ValueError as exc:
        _fail(str(exc), 2)
    except NotFound as exc:
        _fail(str(exc), 1)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except ThreadlineError as exc:
        _fail(str(exc), 1)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        err.print(
            f"access bundle: {len(data['contacts'])} contacts, {len(data['conversations'])} conversations, "
            f"{len(data['identities'])} identities written to {output}"
        )


CONTACTS_TOPIC = typer.Option(None, "--contacts-topic", help="default contacts.resolved.v1")
CONVERSATIONS_TOPIC = typer.Option(None, "--conversations-topic", help="default conversations.v1")
IDENTITIES_TOPIC = typer.Option(None, "--identities-topic", help="default identities.v1")


def _create_key_store(s, wait_seconds: float = 60.0) -> None:
    """Privacy on: the key store's table, made as the database's owner before the first contact,
    since the gateway's and the worker's key-store role may not make it (docs/privacy.md)."""
    from schemas.keystore import KeyStoreUnavailable, create_store

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            create_store(s)
            return
        except ConfigError as exc:
            _fail(str(exc), 2)
        except KeyStoreUnavailable as exc:
            if time.monotonic() > deadline:
                _fail(f"{exc} (waited {wait_seconds:.0f} s)", 1)
            time.sleep(2)


def project(
    projection: list[str] = typer.Option(
        list(PROJECTIONS), "--projection", "-p", help="support, sales, marketing (repeat)"
    ),
    contacts_topic: str = CONTACTS_TOPIC,
    conversations_topic: str = CONVERSATIONS_TOPIC,
    identities_topic: str = IDENTITIES_TOPIC,
    contacts: bool = typer.Option(
        True, "--contacts/--no-contacts", help="also run the contacts projection (/contacts)"
    ),
    profiles: bool = typer.Option(True, help="the support projector publishes customer-profiles.v1"),
    batch_size: int = typer.Option(2000, min=1),
):
    """The projectors: event topics → PostgreSQL read models, offsets in the same transaction."""
    from projectors.contacts import contacts_projector
    from projectors.read_models import read_model_projector
    from threadline.catalog import CUSTOMER_PROFILES
    from threadline.process import claim

    s = _settings()
    claim(s, "projector")  # threadline stop / down find it, however it was started
    _create_key_store(s)
    try:
        # the card's projection publishes the profiles (projectors/profiles.py: after each commit)
        sources = _sources(contacts_topic, conversations_topic, identities_topic)
        runners = [
            read_model_projector(
                s,
                p,
                sources=sources,
                batch_size=batch_size,
                profiles_topic=CUSTOMER_PROFILES.name if profiles and p == "support" else None,
                batch_wait=s.projections.batch_wait_ms / 1000,
            )
            for p in projection
        ]
        if contacts:  # /contacts: the resolved contacts as they came, on the same engine
            runners.append(contacts_projector(s, topic=sources.contacts, batch_size=batch_size))
    except ConfigError as exc:
        _fail(str(exc), 2)
    failures: list[BaseException] = []

    def run(r):
        try:
            r.run()
        except BaseException as exc:  # one projector failing stops them all, loudly
            failures.append(exc)
            for other in runners:
                other.stop_event.set()
            raise

    def stop(*_):
        for r in runners:
            r.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=run, args=(r,), name=r.name) for r in runners]
    try:
        serve_ops(s, runners, threads)
    except ConfigError as exc:
        _fail(str(exc), 2)
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    if failures:
        _fail(f"a projector stopped: {failures[0]}", 1)


def replay(
    projection: str = typer.Argument(..., help="support, sales or marketing"),
    as_of: str = typer.Option(None, "--as-of", help="event time (ISO 8601 with zone): a snapshot as of then"),
    swap: bool = typer.Option(None, help="swap the rebuild in (default: yes; never for --as-of)"),
    contacts_topic: str = CONTACTS_TOPIC,
    conversations_topic: str = CONVERSATIONS_TOPIC,
    identities_topic: str = IDENTITIES_TOPIC,
    batch_size: int = typer.Option(5000, min=1),
):
    """Rebuild a projection from offset 0 beside the live one, then swap it in (blue/green)."""
    from projectors.replay import rebuild

    s = _settings()
    try:
        when = parse_time(as_of, "--as-of")
        if projection not in PROJECTIONS:
            raise ConfigError(f"unknown projection {projection!r}: one of {', '.join(PROJECTIONS)}")
        with progress_bar(f"rebuild {projection}") as progress:
            task = progress.add_task(projection, total=None)

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = rebuild(
                s,
                projection,
                sources=_sources(contacts_topic, conversations_topic, identities_topic),
                as_of=when,
                swap=swap,
                batch_size=batch_size,
                on_progress=on_progress,
            )
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (ThreadlineError, RuntimeError) as exc:
        _fail(str(exc), 1)
    what = "swapped in as" if result.swapped else "built in schema"
    typer.echo(
        f"{projection}: {result.events:,} events in {result.seconds:.1f} s "
        f"({result.per_second:,.0f} events/s), {what} {result.schema}"
    )


def export_cmd(
    file: Path = typer.Argument(..., help="output file"),
    from_: str = typer.Option(None, "--from", help="event time, inclusive (ISO 8601 with zone)"),
    to: str = typer.Option(None, "--to", help="event time, exclusive"),
    topic: list[str] = typer.Option(None, "--topic", help="repeat; default the event topics"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or jsonl"),
    pseudonymize: bool = typer.Option(
        False, "--pseudonymize", help="identities as pseudonyms, no display names (privacy on)"
    ),
    purpose: str = typer.Option(
        None, "--purpose", help="e.g. marketing: leave out customers who withdrew consent for it"
    ),
):
    """Events of an event-time window, decoded, to Parquet or JSON lines (pandas/DuckDB read them)."""
    from projectors.export import export
    from threadline.catalog import CONTACTS_RESOLVED, CONVERSATIONS, IDENTITIES

    s = _settings()
    try:
        start, end = parse_time(from_, "--from"), parse_time(to, "--to")
        topics = topic or [CONTACTS_RESOLVED.name, CONVERSATIONS.name, IDENTITIES.name]
        result = export(s, topics, start, end, fmt, file, pseudonymize=pseudonymize, purpose=purpose)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (ThreadlineError, TimeoutError) as exc:
        _fail(str(exc), 1)
    typer.echo(
        f"{result.rows:,} events written to {result.path} ({result.read:,} read, "
        f"{result.undecodable:,} undecodable left out)"
    )


def publish_profiles(topic: str = typer.Option(None, "--topic", help="default customer-profiles.v1")):
    """Publish every customer's profile to customer-profiles.v1 (a tombstone for each merged-away
    id): a backfill for a topic created after the projection, or a consumer that needs the full set."""
    import psycopg

    from projectors.engine.schema import live_schema
    from projectors.profiles import Publisher
    from schemas.codec import make_codec
    from schemas.keystore import make_store
    from threadline.catalog import CUSTOMER_PROFILES
    from threadline.kafka import BoundedProducer

    s = _settings()
    schema = live_schema(s, "support")
    producer = BoundedProducer.from_settings(s, client_id="profiles-backfill")
    try:
        with psycopg.connect(s.effective_pg_dsn, autocommit=True, connect_timeout=5) as conn:
            # under the support projector's name: a live projector publishing the same ids meanwhile
            # is harmless (every record is the whole profile under its key, on a compacted topic)
            pub = Publisher(schema, schema, make_codec(s), topic or CUSTOMER_PROFILES.name, keyring=make_store(s))
            try:
                pub.queue_all(conn)
            except psycopg.errors.UndefinedTable:
                _fail(f"no support projection in {s.pg_display} (schema {schema}): run `threadline project` first", 2)
            total = pub.queued(conn)
            with progress_bar("customer profiles") as progress:
                task = progress.add_task("profiles", total=total)
                pub.publish(conn, producer, on_progress=lambda done: progress.update(task, completed=done))
    except psycopg.OperationalError as exc:
        _fail(f"PostgreSQL at {s.pg_display}: {exc}", 1)
    except ThreadlineError as exc:
        _fail(str(exc), 1)
    finally:
        producer.close()
    typer.echo(f"{pub.published:,} profiles and {pub.tombstones:,} tombstones published to {pub.topic}")


def register(groups: CommandGroups) -> None:
    """Add the projectors' commands to the main CLI."""
    groups.serve.command("api")(serve_api)
    app = groups.app
    app.add_typer(privacy_app, name="privacy")
    app.command()(project)
    app.command()(replay)
    app.command("export")(export_cmd)
    app.command("publish-profiles")(publish_profiles)
