"""``threadline bench --only SUITE [--compare REF]``: choosing suites, merging their sections into
the report already written, the other revision's tree, and the side-by-side rows of the gateway
section. No benchmark runs here; nothing is timed."""

from __future__ import annotations

import subprocess

import pytest

from connectors import bench as gateway_bench
from threadline.benchkit import Rate, Section
from threadline.errors import ConfigError
from threadline.tools.bench import SUITES, select_suites, tree_of
from threadline.tools.bench.report import merge_report

MACHINE = {
    "date": "2026-11-30 05:10 UTC",
    "CPU": "AMD EPYC",
    "cores": "2 logical (2 usable by this process)",
    "load average at start (1, 5, 15 min)": "1.00, 2.00, 3.00",
    "load average at end (1, 5, 15 min)": "1.50, 2.00, 3.00",
}


def test_only_selects_the_named_suites_in_the_reports_order():
    assert list(select_suites(["importer,gateway"])) == ["gateway", "importer"]
    assert list(select_suites(["gateway", "codec"])) == ["codec", "gateway"]
    assert list(select_suites(None)) == list(SUITES)


def test_an_unknown_suite_is_a_config_error_naming_the_suites():
    with pytest.raises(ConfigError, match="no benchmark suite nope; the suites: codec, raw-clients, gateway"):
        select_suites(["gateway,nope"])


def test_the_importer_alone_says_it_needs_the_raw_clients():
    from types import SimpleNamespace

    with pytest.raises(RuntimeError, match="--only raw-clients,importer"):
        gateway_bench.importer_suite(SimpleNamespace(settings=None, rates={}))


REPORT = """# Threadline benchmarks

## Machine

- **date**: 2026-11-29 02:35 UTC

## Gateway

| measurement | contacts/s |
|---|---:|
| old | 1 |

- an old note

## mbox importer

untouched text
"""


def test_merge_replaces_only_the_sections_run_and_says_when_and_where(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(REPORT)
    merge_report(
        path,
        MACHINE,
        [Section("Gateway", ["measurement", "contacts/s"], [["new", "2"]]), Section("Streams", text=["a new section"])],
        "threadline bench --only gateway",
    )
    text = path.read_text()
    assert "| old | 1 |" not in text and "an old note" not in text and "| new | 2 |" in text
    assert "- **date**: 2026-11-29 02:35 UTC" in text and "## mbox importer\n\nuntouched text" in text
    assert "Measured by `threadline bench --only gateway` on 2026-11-30 05:10 UTC (AMD EPYC, 2 logical" in text
    assert text.index("## Gateway") < text.index("## mbox importer") < text.index("## Streams")
    assert text.count("## Gateway") == 1


def test_tree_of_a_revision_holds_that_revisions_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("before\n")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    (repo / "f.txt").write_text("after\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    tree = tree_of("HEAD~1", tmp_path / "out", repo=repo)
    assert (tree / "f.txt").read_text() == "before\n"
    with pytest.raises(ConfigError, match="--compare nosuchref: not a revision"):
        tree_of("nosuchref", tmp_path / "out", repo=repo)


def test_the_gateway_section_shows_the_other_tree_beside_this_one():
    raw = gateway_bench.ProduceResult(events=20000, seconds=0.5, cpu_seconds=0.4)

    def load(rps: int, cpu_us: float):
        return gateway_bench.LoadResult(
            requests=rps * 15,
            seconds=15.0,
            p50_ms=20,
            p90_ms=30,
            p99_ms=80,
            max_ms=99,
            errors={},
            gateway_cpu_seconds=cpu_us * rps * 15 / 1e6,
        )

    compared = [("e322e28 (round 1)", load(1500, 550)), ("this tree (round 1)", load(2000, 380))]
    section = gateway_bench.gateway_section(load(2000, 390), raw, Rate(20000, 10.0), 250.0, None, compared)
    rows = {r[0]: r for r in section.rows}
    assert rows["gateway at e322e28 (round 1), 1 contact per request (wrk)"][4] == "550"
    assert rows["gateway at this tree (round 1), 1 contact per request (wrk)"][1] == "2,000"
    assert any("alternating" in n for n in section.notes)
    assert (
        "median gateway CPU per single-contact request: this tree 385 µs over 2 runs, e322e28 550 µs over 1 "
        "runs (-30%); aim ≤ 400 µs: met by the median."
    ) in section.notes


def test_a_gateway_of_another_tree_runs_that_trees_code_wherever_the_bench_starts(tmp_path):
    """The other tree's packages come first, even when the bench runs in a checkout of its own
    (python -c puts the working directory first on the path unless -P)."""
    import os

    import connectors

    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "__init__.py").write_text("")
    here = os.path.dirname(os.path.dirname(connectors.__file__))
    show = [*gateway_bench.PYTHON, "-c", "import connectors; print(connectors.__file__)"]
    env = {**os.environ, **gateway_bench.tree_path(tmp_path)}
    out = subprocess.run(show, cwd=here, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "connectors" / "__init__.py")
    own = subprocess.run(
        show, cwd=here, env={**os.environ, **gateway_bench.tree_path(None)}, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert own == connectors.__file__


def test_state_sizes_are_summarized_by_nearest_rank():
    from streams.bench import size_row, size_summary

    sizes = list(range(1, 201))  # 1..200 bytes
    assert size_summary(sizes) == {"count": 200, "mean": 100.5, "p50": 100, "p99": 198, "max": 200}
    assert size_summary([7]) == {"count": 1, "mean": 7.0, "p50": 7, "p99": 7, "max": 7}
    assert size_summary([])["count"] == 0
    assert size_row("x", [1000, 3000]) == ["x", "2", "2,000", "1,000", "3,000", "3,000"]


def test_stream_workers_of_another_tree_alternate_with_this_ones_and_the_note_gives_both_medians(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from streams import bench as streams_bench

    calls = []

    def run(tree, tag):
        calls.append((tree, tag))
        cpu = 2.0 if tree else 1.0  # this tree: half the CPU per contact
        return Rate(1000, 4.0 if tree else 2.0, cpu_seconds=cpu)

    ctx = SimpleNamespace(compare=("main", tmp_path), console=Console(file=io.StringIO()))
    rows = streams_bench.compared_runs(ctx, "worker ×1", run)
    assert calls == [(tmp_path, "cmp1"), (None, "cur1"), (tmp_path, "cmp2"), (None, "cur2")]
    assert [label for label, _ in rows] == [
        "worker ×1, main (round 1)",
        "worker ×1, this tree (round 1)",
        "worker ×1, main (round 2)",
        "worker ×1, this tree (round 2)",
    ]
    [note] = streams_bench.compare_note(rows)
    assert "this tree 500 contacts/s at 1,000 µs CPU/contact against 250/s at 2,000 µs" in note
    assert "rate ×2.00, CPU per contact -50%" in note
    assert streams_bench.compared_runs(SimpleNamespace(compare=None), "x", run) == []
    assert streams_bench.compare_note([]) == []


def test_the_privacy_suite_of_the_worker_alternates_clear_and_sealed_batches_of_the_same_contacts(monkeypatch):
    """``threadline bench --only streams-privacy``: the bench batch sealed as the gateway seals it
    (no identity in the clear, keyed by pseudonyms), and one worker over each, alternately, the
    sealed runs with privacy keys; the note gives the medians' CPU per contact. Nothing timed."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    import schemas
    from schemas.codec import SingleObjectCodec
    from streams import bench as streams_bench
    from tests.privacy_scan import scan
    from threadline.settings import Settings

    from .conftest import RECORDED_AT, full_contact_payload
    from connectors.contact import ContactIn, partition_key, to_record

    contact = ContactIn.model_validate(full_contact_payload())
    codec = SingleObjectCodec()
    value = codec.encode("contacts.v1", schemas.CONTACT, to_record(contact, RECORDED_AT))
    batch = SimpleNamespace(values=[value, value], keys=[partition_key(contact)] * 2)
    ctx = SimpleNamespace(
        settings=Settings(codec="single-object"), batch=batch, events=2, rates={}, console=Console(file=io.StringIO())
    )
    values, keys = streams_bench.sealed_batch(ctx)
    assert len(values) == len(keys) == 2
    assert scan(b"".join(values + keys), ["giulia.rossi@example.it", "+393471234567", "Il mio ordine"]) == []
    assert codec.decode(values[0]).record["sealed"] is not None

    runs = []

    def run_pipeline(ctx_, workers, label, batch=None, env=None):
        runs.append((label, batch is not None, sorted(env or {})))
        sealed = batch is not None
        return Rate(1000, 2.0, 1000 * (300 if sealed else 200), cpu_seconds=1.1 if sealed else 1.0), None

    monkeypatch.setattr(streams_bench, "run_pipeline", run_pipeline)
    [section] = streams_bench.privacy_streams_suite(ctx)
    keys_env = ["THREADLINE_PRIVACY_MASTER_KEY", "THREADLINE_PRIVACY_PSEUDONYM_KEY"]
    assert runs == [
        ("clear1", False, []),
        ("sealed1", True, keys_env),
        ("clear2", False, []),
        ("sealed2", True, keys_env),
    ]
    assert "privacy on 500 contacts/s at 1,100 µs CPU/contact" in section.notes[-1]
    assert "CPU per contact +10%" in section.notes[-1]


def test_process_cpu_seconds_counts_live_children_and_with_reaped_the_ended_ones():
    """PostgreSQL's CPU in the rebuild bench: the server, its live backends, and with ``reaped``
    the backends that closed during the measurement (their CPU lands in the server's cutime)."""
    import os
    import subprocess
    import sys
    import time

    from threadline.benchkit import process_cpu_seconds

    me = os.getpid()
    before, before_reaped = process_cpu_seconds(me), process_cpu_seconds(me, reaped=True)
    subprocess.run([sys.executable, "-c", "t = __import__('time').process_time\nwhile t() < 0.3: pass"], check=True)
    # the child ended and was waited for: only the reaped figure holds its CPU
    assert process_cpu_seconds(me, reaped=True) - before_reaped >= 0.25
    assert process_cpu_seconds(me) - before < 0.25
    child = subprocess.Popen([sys.executable, "-c", "t = __import__('time').process_time\nwhile t() < 5: pass"])
    try:
        deadline = time.monotonic() + 60
        while process_cpu_seconds(child.pid) < 0.2:  # however loaded the machine, until it has run
            assert time.monotonic() < deadline, "the child never ran"
            time.sleep(0.05)
        ran = process_cpu_seconds(child.pid)
        assert process_cpu_seconds(me) - before >= ran - 0.02  # a live child counts as it runs (ticks: 10 ms)
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(None) == 0.0


def test_the_rebuild_note_adds_postgres_cpu_to_the_clients_and_gives_the_wall_time_floor(monkeypatch):
    import os

    from projectors.bench import pg_note
    from threadline.benchkit import Rate

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    copy, rebuild = Rate(20000, 1.0, cpu_seconds=0.25), Rate(20000, 2.0, cpu_seconds=1.5)  # 12.5 and 75 µs
    (note,) = pg_note({"rebuild": 60.0, "copy": 33.0, "cmp1": 57.5, "cur1": 54.5}, copy, rebuild, True)
    assert "COPY 33.0 µs, rebuild 60.0 µs" in note and "other tree first: 57.5 · 54.5" in note
    assert "COPY 45.5 µs, rebuild 135.0 µs per contact" in note
    assert "less than 67.5 µs of wall time per contact, nor the COPY 22.8 µs" in note and "0.34×" in note
    assert pg_note({}, copy, rebuild, False) == [
        "PostgreSQL's own CPU: not measured (the server does not run on this machine)."
    ]


def test_the_machines_busy_time_grows_with_a_process_burning_cpu():
    import subprocess
    import sys

    from threadline.benchkit import machine_busy_seconds

    before = machine_busy_seconds()
    subprocess.run([sys.executable, "-c", "t = __import__('time').process_time\nwhile t() < 0.3: pass"], check=True)
    assert machine_busy_seconds() - before >= 0.25  # at least the child's CPU (ticks: 10 ms)


def test_the_streams_machine_note_gives_each_rounds_cpu_per_contact_and_the_cores_rate(monkeypatch):
    import os

    from streams.bench import machine_note
    from threadline.benchkit import Rate

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    ones = [Rate(10000, 5.0, machine_cpu_seconds=8.0)]  # 800 µs a contact: 2 cores give 2,500/s
    twos = [Rate(10000, 4.0, machine_cpu_seconds=10.0)]  # 1,000 µs: 2,000/s
    note = machine_note(ones, twos)
    assert (
        "round 1: one worker 800 µs (2,500/s at 2 busy cores), two workers 1,000 µs (2,000/s at 2 busy cores)" in note
    )
    assert "not measured" in machine_note([Rate(10, 1.0)], [Rate(10, 1.0)])


def test_the_workers_of_a_tree_from_before_the_stages_option_run_without_it(tmp_path):
    """``--compare e322e28`` (the commit before the stream throughput work, whose worker has no
    ``--stages``) runs that tree's workers with every stage, so one run gives its rate beside this
    tree's; the identity stage alone cannot be asked of such a tree."""
    from streams.bench import _stages_args

    assert _stages_args(None, "route,identity,conversations") == ["--stages", "route,identity,conversations"]
    old = tmp_path / "e322e28"  # its worker command, as that commit had it
    (old / "streams").mkdir(parents=True)
    (old / "streams" / "cli.py").write_text(
        'def worker(app_id: str = typer.Option(None), topic_prefix: str = ""): ...\n'
    )
    assert _stages_args(old, "route,identity,conversations") == []
    with pytest.raises(RuntimeError, match="cannot run --stages identity"):
        _stages_args(old, "identity")
