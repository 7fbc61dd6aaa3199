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

The pieces the suites share (Rate, Section, BenchContext, produce/consume baselines) are in the
kernel, ``threadline/benchkit.py``; each feature keeps its own suites (``connectors/bench.py``,
``streams/bench.py``, ``projectors/bench.py``) and ``SUITES`` below runs them in order (``--only``
some of them, their sections merged into the report already written), each
reading the baselines from ``ctx.rates`` (see BASELINE_*). The harness is split by role:
``report.py`` (the report and the machine), ``data.py`` (the contacts), ``suites.py`` (the
baselines), and here the runner, ``SUITES`` and ``--compare``'s other tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from connectors.bench import gateway_suite, importer_suite, privacy_suite
from projectors.bench import privacy_rebuild_suite, projection_rebuild_suite
from streams.bench import identity_suite, privacy_streams_suite, state_suite, streams_suite
from threadline.benchkit import (
    BASELINE_DECODE,
    BASELINE_ENCODE,
    DEFAULT_WARMUP,
    BenchContext,
    EventBatch,
    Rate,
    Section,
)
from threadline.errors import ConfigError
from threadline.settings import Settings
from threadline.tools.freshness import freshness_suite
from threadline.tools.read_bench import read_suite
from threadline.tools.bench.data import build_records
from threadline.tools.bench.report import crc32c_status, machine_info, merge_report, versions_section, write_report
from threadline.tools.bench.suites import codec_suite, measure_codec, raw_clients_suite

# Every suite by name, in the order the report shows them: the baselines first, then each feature's own.
SUITES: dict[str, Callable[[BenchContext], list[Section]]] = {
    "codec": codec_suite,
    "raw-clients": raw_clients_suite,
    "gateway": gateway_suite,  # gateway contacts/s, wrk (connectors/bench.py)
    "importer": importer_suite,  # mbox importer contacts/s (connectors/bench.py)
    "privacy": privacy_suite,  # sealing cost per contact at the gateway, opening at the projector
    "projection-rebuild": projection_rebuild_suite,  # rebuild rate against the COPY baseline (projectors/bench.py)
    "privacy-rebuild": privacy_rebuild_suite,  # the rebuild from sealed contacts, the batch hook on and off
    "read": read_suite,  # read API p50/p99 at 1,000,000 contacts, aggregates kept vs views (tools/read_bench.py)
    "freshness": freshness_suite,  # gateway ack → read API latency, every component a process
    "streams": streams_suite,  # identity + stitching contacts/s, one and two workers
    "streams-privacy": privacy_streams_suite,  # one worker, sealed contacts against contacts in the clear
    "identity": identity_suite,  # the identity stage alone against its rules on a dict
    "streams-state": state_suite,  # the worker's tables after the batch: bytes per customer
}


def select_suites(only: Sequence[str] | None) -> dict[str, Callable[[BenchContext], list[Section]]]:
    """The suites ``--only`` names (comma lists allowed), in the report's order; every suite
    without it. ConfigError naming the known ones for a name that is not a suite."""
    if not only:
        return dict(SUITES)
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = sorted(names - set(SUITES))
    if unknown:
        raise ConfigError(f"no benchmark suite {', '.join(unknown)}; the suites: {', '.join(SUITES)}")
    return {name: suite for name, suite in SUITES.items() if name in names}


def tree_of(ref: str, into: Path, repo: Path | None = None) -> Path:
    """The project's files at git revision ``ref`` (``git archive``), unpacked under ``into``;
    ConfigError when this is not a git checkout or ``ref`` is not a revision of it."""
    import subprocess
    import tarfile

    repo = repo or Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(
            f"--compare {ref}: not a revision of a git checkout at {repo} "
            f"({str(getattr(exc, 'stderr', '') or exc).strip()})"
        ) from None
    target = into / commit
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def prepare_batch(settings: Settings, events: int, warmup: int, console: Console) -> tuple[EventBatch, Rate, Rate]:
    """Build the records, encode them once with the project's codec (timed), decode them (timed)."""
    from schemas.codec import make_codec

    with console.status(f"building {events:,} contact records ..."):
        records, keys = build_records(events)
    codec = make_codec(settings)
    with console.status(f"encoding and decoding with {type(codec).__name__} ..."):
        values, enc, dec = measure_codec(codec, records, warmup=warmup)
    name = f"{type(codec).__name__} (THREADLINE_CODEC={settings.registry.codec.value})"
    return EventBatch(name, records, keys, values), enc, dec


def run_bench(
    settings: Settings,
    *,
    events: int = 20000,
    out: Path = Path("docs/benchmarks.md"),
    console: Console | None = None,
    warmup: int = DEFAULT_WARMUP,
    suites: Sequence[Callable[[BenchContext], list[Section]]] | None = None,
    only: Sequence[str] | None = None,
    compare: str | None = None,
) -> Path:
    """Bring the stack up, run the suites (``only``: those named; ``suites``: these), print the
    tables and write the report to ``out``: the whole report, or with ``only`` its sections merged
    into the report already there. ``compare``: a git revision whose gateway and stream workers
    are measured beside this tree's."""
    import tempfile

    from threadline.tools import stack

    if events < 1:
        raise ValueError("events must be at least 1")
    chosen = list(suites) if suites is not None else list(select_suites(only).values())
    console = console or Console()
    console.rule("Threadline benchmarks")
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        compare_tree = (compare, tree_of(compare, Path(tmp))) if compare else None
        stack.up(settings, log=lambda m: console.print(f"[dim]{m}[/]"))
        ok, crc = crc32c_status()
        console.print(("[green]" if ok else "[bold red]") + f"crc32c:[/] {crc}")

        warmup = max(0, min(warmup, events))
        batch, enc, dec = prepare_batch(settings, events, warmup, console)
        ctx = BenchContext(
            settings,
            console,
            events,
            warmup,
            run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}",
            batch=batch,
            rates={BASELINE_ENCODE: enc, BASELINE_DECODE: dec},
            compare=compare_tree,
        )
        sections = [] if only else [versions_section(settings)]
        for suite in chosen:
            for section in suite(ctx):
                sections.append(section)
                if section.columns:
                    console.print(section.rich_table())
                for note in section.notes:
                    console.print(f"[dim]  {note}[/]")
    machine["load average at end (1, 5, 15 min)"] = (
        ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    )
    if only:
        flags = " ".join([f"--only {','.join(select_suites(only))}", *([f"--compare {compare}"] if compare else [])])
        path = merge_report(out, machine, sections, f"threadline bench {flags}")
    else:
        path = write_report(out, machine, sections)
    console.print(f"report written to [bold]{path}[/]")
    return path


__all__ = ["SUITES", "select_suites", "tree_of", "prepare_batch", "run_bench"]
