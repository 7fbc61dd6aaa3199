"""The ``threadline`` command line.

    threadline up | down | status          the local stack
    threadline topics apply [--dry-run]    the topic catalog on the cluster (--prefix: under <prefix>.)
    threadline groups [--json]             consumer groups: members, state, lag per topic
    threadline topics list
    threadline topics manifests [--check]  KafkaTopic resources for Kubernetes (deploy/k8s)
    threadline serve gateway | api         HTTP services
    threadline worker                      stream processors (faust)
    threadline identity unlink A B         withdraw a link of the identity graph
    threadline project                     projectors
    threadline replay PROJECTION [--as-of]  rebuild beside the live one and swap; time travel
    threadline export --from --to FILE      events of an event-time window → Parquet / JSON lines
    threadline demo                        the whole pipeline with a handful of contacts
    threadline ingest mbox|asterisk-cdr FILE, ingest imap   importers (connectors/cli.py)
    threadline generate                    synthetic cross-channel webhook traffic
    threadline bench                       benchmarks → docs/benchmarks.md

Exit codes: 0 success, 1 failure of the operation, 2 bad usage or configuration,
3 topic drift.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from connectors.cli import register as connectors_commands
from projectors.cli import register as projectors_commands
from streams.cli import register as streams_commands
from threadline.commands import CommandGroups, fail, load_settings
from threadline.errors import ConfigError, ThreadlineError, TopicDriftError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Threadline: cross-channel conversations on Kafka.",
)
topics_app = typer.Typer(no_args_is_help=True, help="The topic catalog.")
serve_app = typer.Typer(no_args_is_help=True, help="HTTP services.")
app.add_typer(topics_app, name="topics")
app.add_typer(serve_app, name="serve")

console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


settings = load_settings


# Every feature adds its own commands (connectors: ingest, generate, serve gateway; streams:
# worker, identity unlink; projectors: project, replay, export, serve api).
for register in (connectors_commands, streams_commands, projectors_commands):
    register(CommandGroups(app=app, serve=serve_app))


@app.callback()
def main_options(home: Path = typer.Option(None, "--home", help="state folder of the local stack (THREADLINE_HOME)")):
    if home is not None:
        os.environ["THREADLINE_HOME"] = str(home)


@app.command()
def setup(
    only: list[str] = typer.Option(None, "--only", help="only these steps: kafka, registry, compose, crds"),
    force: bool = typer.Option(False, "--force", help="run the steps again even where their output exists"),
    check: bool = typer.Option(False, "--check", help="build nothing; exit 1 when a step has not run"),
):
    """Fetch and build everything the stack, the tests and the demo start later (make setup)."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from threadline.tools.stack import setup as steps
    from threadline.tools.stack.paths import build_root

    s = settings()
    if check:
        missing = steps.missing(s)
        for name in missing:
            err.print(f"not built: {name}")
        raise typer.Exit(1 if missing else 0)
    t0 = time.monotonic()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=False
    ) as progress:
        task = progress.add_task("set-up", total=None)

        def report(name: str, state: str, seconds: float) -> None:
            progress.console.print(f"{name:9} {state}" + (f" in {seconds:.0f} s" if seconds else ""))

        for step in steps.STEPS:
            if only and step.name not in only:
                continue
            progress.update(task, description=f"{step.name}: {step.what}")
            try:
                steps.run(s, only=(step.name,), force=force, report=report)
            except ConfigError as exc:
                progress.stop()
                fail(str(exc), 1)
    console.print(f"set-up complete in {time.monotonic() - t0:.0f} s; built into {build_root()}")


@app.command()
def up():
    """Start Kafka, PostgreSQL and the schema registry (idempotent)."""
    from threadline.tools import stack

    s = settings()
    try:
        started = stack.up(s, log=lambda m: err.print(f"[dim]{m}[/]"))
    except (ConfigError, TimeoutError) as exc:
        fail(str(exc), 2 if isinstance(exc, ConfigError) else 1)
    for part, new in started.items():
        console.print(f"{part}: {'started' if new else 'already running'}")
    console.print(f"state in {s.state_dir}; stop with [bold]threadline down[/]")


COMPONENTS = ("gateway", "api", "worker", "projector", "kafka", "postgres", "registry")


def _component(name: str) -> str:
    if name not in COMPONENTS:
        fail(f"unknown component {name!r}: one of {', '.join(COMPONENTS)}", 2)
    return name


@app.command()
def start(component: str = typer.Argument(..., help=", ".join(COMPONENTS))):
    """Start one part with the settings of this environment (already running: left as it is)."""
    from threadline.tools import stack

    s = settings()
    try:
        started = stack.start_part(s, _component(component))
    except (ConfigError, TimeoutError) as exc:
        fail(str(exc), 2 if isinstance(exc, ConfigError) else 1)
    console.print(f"{component}: {'started' if started else 'already running'}")


@app.command()
def stop(component: str = typer.Argument(..., help=", ".join(COMPONENTS))):
    """Stop one part, however it was started (threadline start, up, demo or by hand)."""
    from threadline.tools import stack

    ran = stack.stop_part(settings(), _component(component))
    console.print(f"{component}: {'stopped' if ran else 'was not running'}")


@app.command()
def restart(component: str = typer.Argument(..., help=", ".join(COMPONENTS))):
    """Stop, then start one part with the settings of this environment (a changed setting takes effect)."""
    from threadline.tools import stack

    s = settings()
    stack.stop_part(s, _component(component))
    try:
        stack.start_part(s, component)
    except (ConfigError, TimeoutError) as exc:
        fail(str(exc), 2 if isinstance(exc, ConfigError) else 1)
    console.print(f"{component}: restarted")


@app.command()
def down():
    """Stop everything this state folder started."""
    from threadline.tools import stack

    stopped = stack.down(settings())
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status():
    """Each part of the stack, its address, and whether it answers; consumer group and projection lag."""
    from threadline.tools import stack

    s = settings()
    table = Table("part", "address", "process", "answers", "detail")
    parts = stack.status(s)
    for p in parts:
        proc = "running" if p.running else ("external" if not p.managed else "stopped")
        table.add_row(p.name, p.address, proc, "[green]yes[/]" if p.answers else "[red]no[/]", p.detail)
    console.print(table)
    infra = [p for p in parts if p.name in ("kafka", "postgres", "registry")]
    raise typer.Exit(0 if all(p.answers for p in infra) else 1)


@app.command()
def groups(
    group: list[str] = typer.Option(None, "--group", "-g", help="only these consumer groups"),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts: one object per group"),
):
    """Consumer groups: state, members, and per topic the committed vs end offsets (lag)."""
    import json

    from threadline.groups import group_lags

    lags = group_lags(settings(), groups=group or None)
    if as_json:
        print(json.dumps([g.as_dict() for g in lags], indent=2))
        return
    table = Table("group", "state", "members", "topic", "partitions", "committed", "end", "lag")
    for g in lags:
        rows = g.topics or ()
        if not rows:
            table.add_row(g.group, g.state, str(g.members), "-", "0", "-", "-", "0")
        for i, t in enumerate(rows):
            first = i == 0
            table.add_row(
                g.group if first else "",
                g.state if first else "",
                str(g.members) if first else "",
                t.topic,
                str(t.partitions),
                f"{t.committed:,}",
                f"{t.end:,}",
                f"{t.lag:,}",
            )
    console.print(table if lags else "no consumer groups")


@topics_app.command("apply")
def topics_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and the drift, change nothing"),
    prefix: str = typer.Option("", "--prefix", help="the catalog under <prefix>.<topic> (a second tenant)"),
):
    """Create missing topics; report drift as an error (exit 3). --dry-run: the plan, exit 3 on drift."""
    from threadline.catalog import CATALOG
    from threadline.topics import apply, prefixed

    try:
        report = apply(settings(), prefixed(CATALOG, prefix), dry_run=dry_run)
    except TopicDriftError as exc:
        for d in exc.drifts:
            err.print(f"[bold red]drift:[/] {d}")
        raise typer.Exit(3)
    verb = "would create" if dry_run else "created  "
    for p in report.plans:
        console.print(f"{verb} {p.name}  {p.describe()}", soft_wrap=True)
    for name in report.in_line:
        console.print(f"in line   {name}")
    for d in report.drifted:  # a dry run reports drift instead of raising it
        err.print(f"[bold red]drift:[/] {d}", soft_wrap=True)
    if dry_run:
        console.print(
            f"plan: {len(report.plans)} to create, {len(report.in_line)} in line, "
            f"{len(report.drifted)} drift{'s' if len(report.drifted) != 1 else ''}; nothing changed"
        )
    raise typer.Exit(3 if report.drifted else 0)


@topics_app.command("list")
def topics_list():
    """The catalog: name, partitions, key, cleanup policy, retention."""
    from threadline.catalog import CATALOG

    table = Table("topic", "partitions", "key", "cleanup", "retention.ms", "purpose")
    for t in CATALOG:
        table.add_row(t.name, str(t.partitions), t.key, t.cleanup_policy, t.retention_ms, t.doc)
    console.print(table)


@topics_app.command("manifests")
def topics_manifests(
    out: Path = typer.Option(
        Path("deploy/k8s/base/kafka/topics.yaml"), "--out", help="where the KafkaTopic resources go; - for stdout"
    ),
    replicas: int = typer.Option(3, "--replicas", min=1, help="replication factor of every topic"),
    min_insync: int = typer.Option(2, "--min-insync", min=1, help="min.insync.replicas of every topic"),
    cluster: str = typer.Option("threadline", "--cluster", help="the Strimzi Kafka cluster (strimzi.io/cluster label)"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 3 when the file differs"),
):
    """Strimzi KafkaTopic resources from the catalog (deploy/k8s); --check reports drift (exit 3)."""
    from threadline.tools.k8s import topics_manifest

    try:
        text = topics_manifest(cluster=cluster, replicas=replicas, min_insync=min_insync)
    except ValueError as exc:
        fail(str(exc), 2)
    if check:
        have = out.read_text(encoding="utf-8") if out.is_file() else None
        if have != text:
            err.print(
                f"[bold red]drift:[/] {out} {'is missing' if have is None else 'differs from the catalog'}; "
                "run `threadline topics manifests` to write it"
            )
            raise typer.Exit(3)
        console.print(f"in line   {out}")
        return
    if str(out) == "-":
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote     {out} ({text.count(chr(10) + 'kind: KafkaTopic' + chr(10))} topics)")


@app.command()
def demo(
    external: bool = typer.Option(
        False,
        "--external",
        help="tell the story to the gateway and read API the "
        "settings name (e.g. docker compose); start and stop nothing",
    ),
):
    """Bring the stack up, send a handful of contacts through, print the read model."""
    from threadline.tools.demo import run_demo

    try:
        run_demo(settings(), console, external=external)
    except (ConfigError, TimeoutError) as exc:
        fail(str(exc), 2 if isinstance(exc, ConfigError) else 1)


@app.command()
def bench(
    events: int = typer.Option(20000, help="events per measurement"),
    out: Path = typer.Option(Path("docs/benchmarks.md"), help="where the figures go"),
    only: list[str] = typer.Option(
        None,
        "--only",
        help="only these suites (codec, raw-clients, gateway, "
        "importer, privacy, projection-rebuild, privacy-rebuild, freshness, streams, "
        "identity, streams-privacy, read); their sections "
        "replace those of the report already written",
    ),
    compare: str = typer.Option(
        None,
        "--compare",
        help="a git revision whose gateway (gateway suite), stream workers (streams, identity) and read API (read) are measured beside this tree's, alternating, in the same run",
    ),
):
    """Benchmarks on the local stack; writes docs/benchmarks.md."""
    from threadline.tools.bench import run_bench

    try:
        run_bench(settings(), events=events, out=out, console=console, only=only, compare=compare)
    except (ConfigError, TimeoutError, RuntimeError) as exc:
        fail(f"benchmark did not complete: {exc}", 2 if isinstance(exc, ConfigError) else 1)


def main() -> None:
    try:
        app()
    except ThreadlineError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2 if isinstance(exc, ConfigError) else 1)


if __name__ == "__main__":
    main()
