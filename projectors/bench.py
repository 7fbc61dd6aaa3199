"""Benchmark suite for ``threadline bench``: projection rebuild against a plain COPY.

With ``threadline bench --compare REF`` the rebuild also runs in processes of its own, REF's tree
and this one alternately (``compared_runs``), each on the same topic into a schema of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from threadline.benchkit import (
    PYTHON,
    RATE_COLUMNS,
    BenchContext,
    Rate,
    Section,
    bench_topics,
    compare_note,
    compared_runs,
    fmt_ratio,
    postgres_server_pid,
    process_cpu_seconds,
    produce_kafka_python,
    rate_row,
    tree_path,
)

BASELINE_COPY = "projection.copy"
REBUILD = "projection.rebuild"
REBUILD_TIMEOUT = 600.0

# One rebuild in a process of its own: argv prefix, topic, result file; the settings come from the
# environment (the bench's own). Written against the ``rebuild`` every tree compared has.
_REBUILD_PROCESS = """
import json, sys, time
from projectors.engine.runner import Sources
from projectors.replay import rebuild
from schemas.codec import make_codec
from threadline.settings import get_settings
settings = get_settings().model_copy(update={"projection_prefix": sys.argv[1]})
c0 = time.process_time()
r = rebuild(settings, "support", sources=Sources(sys.argv[2], None, None), codec=make_codec(settings))
cpu = time.process_time() - c0
open(sys.argv[3], "w").write(json.dumps({"events": r.events, "seconds": r.seconds, "cpu": cpu}))
"""


def rebuild_in_process(topic: str, prefix: str, size: int, tree: Path | None) -> Rate:
    """``rebuild`` of support from ``topic`` in a new process importing the project from ``tree``
    (None: this one), into schemas named ``prefix``...; its rate and the process's CPU."""

    with tempfile.TemporaryDirectory(prefix="threadline-rebuild-") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "THREADLINE_LOG_LEVEL": "WARNING", **tree_path(tree)}
        done = subprocess.run(
            [*PYTHON, "-c", _REBUILD_PROCESS, prefix, topic, str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=REBUILD_TIMEOUT,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"rebuild in {tree or 'this tree'} failed: {done.stderr.decode()[-2000:]}")
        r = json.loads(out.read_text())
    return Rate(r["events"], r["seconds"], size, cpu_seconds=r["cpu"])


def projection_rebuild_suite(ctx: BenchContext) -> list[Section]:
    """Rebuild the support projection from a topic of N resolved contacts, and COPY the same rows
    (shaped beforehand, untimed) straight into the same tables of an empty schema."""

    import schemas
    from projectors.engine.schema import connect, create_schema
    from projectors.rows import CONTACT, CONTACT_COLUMNS, IDENTITY_COLUMNS, Batch
    from schemas.codec import make_codec

    n = ctx.events
    prefix = re.sub(r"[^a-z0-9_]", "_", f"bench_{ctx.run_id}_".lower())
    settings = ctx.settings.model_copy(update={"projection_prefix": prefix})
    records = [{**r, "customer_id": f"c-{k.decode()}"} for r, k in zip(ctx.batch.records[:n], ctx.batch.keys[:n])]
    topic = ctx.topic("projection.contacts")
    codec = make_codec(settings)
    values = [codec.encode(topic, schemas.CONTACT, r) for r in records]
    keys = [r["customer_id"].encode() for r in records]
    batch = Batch()
    for i, r in enumerate(records):
        batch.add(CONTACT, r, 0, i)
    conn = connect(settings, "bench-copy")
    server = postgres_server_pid(conn)  # PostgreSQL's own CPU, when it runs on this machine

    def pg_cpu() -> float:
        return process_cpu_seconds(server, reaped=True)  # the server and its backends, closed ones too

    pg_us: dict[str, float] = {}  # PostgreSQL CPU µs per contact of each measurement
    try:
        with bench_topics(settings, [topic], console=ctx.console):
            produce_kafka_python(settings, topic, values, keys)
            with ctx.console.status(f"rebuilding support from {n:,} events ..."):
                # in a process of its own, as `threadline replay` runs (none of the bench's objects,
                # threads or clients in it), with a codec of its own: writer schemas from the registry
                g0 = pg_cpu()
                rebuilt = rebuild_in_process(topic, prefix, sum(map(len, values)), None)
                pg_us["rebuild"] = (pg_cpu() - g0) / n * 1e6
            copy_schema = f"{prefix}copy"
            create_schema(conn, "support", copy_schema, "bench")
            t0, c0, g0 = time.perf_counter(), time.process_time(), pg_cpu()
            with conn.transaction(), conn.cursor() as cur:
                for table, cols, rows in (
                    ("contacts", CONTACT_COLUMNS, batch.contacts),
                    ("customer_identities", IDENTITY_COLUMNS, list({r[:4]: r for r in batch.identities}.values())),
                    (
                        "customers",
                        ("origin_customer_id", "customer_id", "first_seen_at"),
                        list({c: (c, c, at) for c, at in batch.customers}.values()),
                    ),
                ):
                    with cur.copy(f"copy {copy_schema}.{table} ({', '.join(cols)}) from stdin") as cp:
                        for row in rows:
                            cp.write_row(row)
            copied = Rate(n, time.perf_counter() - t0, rebuilt.bytes, cpu_seconds=time.process_time() - c0)
            pg_us["copy"] = (pg_cpu() - g0) / n * 1e6

            def compared_rebuild(tree, tag: str) -> Rate:
                g0 = pg_cpu()
                rate = rebuild_in_process(topic, f"{prefix}{tag}_", rebuilt.bytes, tree)
                pg_us[tag] = (pg_cpu() - g0) / n * 1e6
                return rate

            compared = compared_runs(ctx, "replay support", compared_rebuild)
    finally:
        for (name,) in conn.execute(
            "select nspname from pg_namespace where nspname like %s", (prefix + "%",)
        ).fetchall():
            conn.execute(f"drop schema {name} cascade")
        conn.execute("delete from projection_offsets where projector like %s", (prefix + "%",))
        conn.close()
    ctx.rates.update({BASELINE_COPY: copied, REBUILD: rebuilt})
    return [
        Section(
            "Projection rebuild",
            RATE_COLUMNS,
            [
                rate_row("COPY of the shaped rows (baseline)", copied),
                rate_row("threadline replay support", rebuilt, copied),
                *(rate_row(label, rate, copied) for label, rate in compared),
            ],
            text=[
                "`threadline replay support` on a topic of N resolved contacts: consume from offset 0, decode, shape "
                "(sentiment included; the next batch while one is written), COPY into staging tables and upsert, "
                "offsets in the same transaction; at the end of the pass the lookup indexes, the conversations and the "
                "aggregate tables once from every row; then the blue/green swap; in a process of its own, as `threadline "
                "replay` runs. The baseline is a plain COPY of the same rows (shaped beforehand, not timed) into "
                "the same tables (contacts, customer_identities, customers) of an empty schema, in one transaction: "
                "every contact row, one identity row per customer and identity, one row per customer, with the "
                "tables' indexes in place. It measures writing the rows (psycopg's COPY formatting in the bench "
                "process, PostgreSQL's parsing, inserts, indexes and WAL), not consuming, decoding or shaping them, "
                "the upserts that keep a contact's latest resolution, the derived tables, nor a process's start-up."
            ],
            notes=[
                f"ratio: rebuild events/s ÷ COPY rows/s = {fmt_ratio(rebuilt.ratio(copied))} (aim: 0.5 or more).",
                "CPU µs/event: CPU time of the rebuild's process (of the bench process for the COPY; PostgreSQL's "
                "own CPU is not counted) ÷ events.",
                *pg_note(pg_us, copied, rebuilt, server is not None),
                *compare_note(compared),
                "Freshness through the whole pipeline has its own section.",
            ],
        )
    ]


def pg_note(pg_us: dict[str, float], copied: Rate, rebuilt: Rate, local: bool) -> list[str]:
    """PostgreSQL's own CPU per contact beside the client's, for the COPY and each rebuild."""
    if not local:
        return ["PostgreSQL's own CPU: not measured (the server does not run on this machine)."]
    rounds = " · ".join(f"{v:,.1f}" for t, v in pg_us.items() if t.startswith(("cmp", "cur")))  # in run order
    copy = (copied.cpu_us_per_event or 0.0) + pg_us["copy"]
    rebuild = (rebuilt.cpu_us_per_event or 0.0) + pg_us["rebuild"]
    cores = os.cpu_count() or 1
    return [
        "PostgreSQL's own CPU per contact (the server's processes, summed; whatever else it did in those "
        f"seconds included): COPY {pg_us['copy']:,.1f} µs, rebuild {pg_us['rebuild']:,.1f} µs"
        + (f" (the compared rounds in the order they ran, the other tree first: {rounds})" if rounds else "")
        + f". Client and server together: COPY {copy:,.1f} µs, rebuild {rebuild:,.1f} µs per contact; on "
        f"{cores} cores the rebuild cannot take less than {rebuild / cores:,.1f} µs of wall time per contact, "
        f"nor the COPY {copy / cores:,.1f} µs (the ratio of the two floors: {copy / rebuild:.2f}×)."
    ]


def privacy_rebuild_suite(ctx: BenchContext) -> list[Section]:
    """The support projection rebuilt from the same resolved contacts, side by side: in the clear
    (privacy off); sealed and opened through the engine's batch hook (``OpeningCodec.prefetch``:
    one key-store query per polled batch); sealed and opened record by record (the hook off:
    ``decode`` asks the store for each record's keys it has not asked yet). Key store:
    ``privacy.data_keys`` on the local PostgreSQL, keys created beforehand (not timed)."""
    import base64
    import os
    import uuid

    from pydantic import SecretStr

    import schemas
    from projectors.engine.runner import Sources
    from projectors.engine.schema import connect
    from projectors.replay import rebuild
    from schemas.codec import make_codec
    from schemas.keystore import CachedKeyRing, OpeningCodec, make_store
    from schemas.privacy import seal_contact, subjects_of

    class Counting:
        def __init__(self, ring):
            self.ring, self.calls = ring, 0

        def resolve(self, tokens):
            self.calls += 1
            return self.ring.resolve(tokens)

    n = min(ctx.events, 10000)
    prefix = f"bp{uuid.uuid4().hex[:6]}_"  # short: a build's schema name stays within 63 characters
    keys = {
        "privacy_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
        "privacy_pseudonym_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
    }
    settings = ctx.settings.model_copy(update=keys)
    records = [{**r, "customer_id": f"c-{k.decode()}"} for r, k in zip(ctx.batch.records[:n], ctx.batch.keys[:n])]
    store = make_store(settings)
    assert store is not None
    topics = [ctx.topic("privacy.clear"), ctx.topic("privacy.sealed")]
    try:
        with ctx.console.status(f"sealing {n:,} contacts ..."):
            store.ensure(list(dict.fromkeys(s for r in records for s in subjects_of(r))))
            cached = CachedKeyRing(store, ttl=3600)
            sealed = [seal_contact(r, cached) for r in records]
        codec = make_codec(settings)
        clear_values = [codec.encode(topics[0], schemas.CONTACT, r) for r in records]
        sealed_values = [codec.encode(topics[1], schemas.CONTACT, r) for r in sealed]
        row_keys = [r["customer_id"].encode() for r in records]
        rates: dict[str, tuple[Rate, int]] = {}
        with bench_topics(settings, topics, console=ctx.console):
            produce_kafka_python(settings, topics[0], clear_values, row_keys)
            produce_kafka_python(settings, topics[1], sealed_values, row_keys)
            for label, topic, values, hook in (
                ("clear", topics[0], clear_values, None),
                ("batch", topics[1], sealed_values, True),
                ("each", topics[1], sealed_values, False),
            ):
                counting = Counting(store)
                run_codec = make_codec(settings)
                if hook is not None:
                    run_codec = OpeningCodec(run_codec, counting)
                    if not hook:
                        run_codec.prefetch = None  # type: ignore[method-assign]  # the engine sees no hook
                run_settings = ctx.settings.model_copy(update={"projection_prefix": f"{prefix}{label}_"})
                with ctx.console.status(f"rebuilding support from {n:,} events ({label}) ..."):
                    c0 = time.process_time()
                    result = rebuild(run_settings, "support", sources=Sources(topic, None, None), codec=run_codec)
                    cpu = time.process_time() - c0
                rates[label] = (
                    Rate(result.events, result.seconds, sum(map(len, values)), cpu_seconds=cpu),
                    counting.calls,
                )
    finally:
        store.close()
        conn = connect(ctx.settings, "bench-cleanup")
        try:
            for (name,) in conn.execute(
                "select nspname from pg_namespace where nspname like %s", (prefix + "%",)
            ).fetchall():
                conn.execute(f"drop schema {name} cascade")
            conn.execute("delete from projection_offsets where projector like %s", (prefix + "%",))
            conn.execute("delete from projection_builds where schema_name like %s", (prefix + "%",))
        finally:
            conn.close()
    clear, batch, each = rates["clear"][0], rates["batch"][0], rates["each"][0]
    return [
        Section(
            "Projection rebuild with privacy on",
            RATE_COLUMNS,
            [
                rate_row("replay support, contacts in the clear (privacy off)", clear),
                rate_row("replay support, sealed, engine batch hook (prefetch)", batch, clear),
                rate_row("replay support, sealed, opened record by record (no hook)", each, clear),
            ],
            text=[
                f"`threadline replay support` on a topic of {n:,} resolved contacts, three times side by side: "
                "the contacts in the clear; the same contacts sealed, opened by the projector engine through "
                "`OpeningCodec.prefetch` (its batch hook: the keys of a polled batch of 5,000 asked at once, one query "
                "per 5,000 keys); and sealed, "
                "opened with the hook off (`decode` asks for each record's keys it has not asked in the last second). "
                "Key store: `privacy.data_keys` on the local PostgreSQL, keys created beforehand (not timed)."
            ],
            notes=[
                f"key-store queries: {rates['batch'][1]:,} with the batch hook, {rates['each'][1]:,} without it "
                "(the bench's contacts carry several identities and facts: each a key).",
                f"opening adds {((batch.cpu_seconds or 0) - (clear.cpu_seconds or 0)) / n * 1e6:,.1f} µs of process "
                "CPU per contact with the hook (PostgreSQL's own CPU is not counted).",
            ],
        )
    ]
