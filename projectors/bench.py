"""Benchmark suite for ``threadline bench``: projection rebuild against a plain COPY."""

from __future__ import annotations

import re
import time

from threadline.benchkit import RATE_COLUMNS, BenchContext, Rate, Section, bench_topics, fmt_ratio, produce_kafka_python, rate_row

BASELINE_COPY = "projection.copy"
REBUILD = "projection.rebuild"


def projection_rebuild_suite(ctx: BenchContext) -> list[Section]:
    """Rebuild the support projection from a topic of N resolved contacts, and COPY the same rows
    (shaped beforehand, untimed) straight into the same tables of an empty schema."""

    import schemas
    from projectors.engine.runner import Sources
    from projectors.engine.schema import connect, create_schema
    from projectors.replay import rebuild
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
    with bench_topics(settings, [topic], console=ctx.console):
        produce_kafka_python(settings, topic, values, keys)
        with ctx.console.status(f"rebuilding support from {n:,} events ..."):
            c0 = time.process_time()
            # A codec of its own, as `threadline replay` has: writer schemas come from the registry.
            result = rebuild(settings, "support", sources=Sources(topic, None, None), codec=make_codec(settings))
            cpu = time.process_time() - c0
        rebuilt = Rate(result.events, result.seconds, sum(map(len, values)), cpu_seconds=cpu)
        conn = connect(settings, "bench-copy")
        try:
            copy_schema = f"{prefix}copy"
            create_schema(conn, "support", copy_schema, "bench")
            t0, c0 = time.perf_counter(), time.process_time()
            with conn.transaction(), conn.cursor() as cur:
                for table, cols, rows in (("contacts", CONTACT_COLUMNS, batch.contacts),
                                          ("customer_identities", IDENTITY_COLUMNS,
                                           list({r[:4]: r for r in batch.identities}.values())),
                                          ("customers", ("origin_customer_id", "customer_id", "first_seen_at"),
                                           list({c: (c, c, at) for c, at in batch.customers}.values()))):
                    with cur.copy(f"copy {copy_schema}.{table} ({', '.join(cols)}) from stdin") as cp:
                        for row in rows:
                            cp.write_row(row)
            copied = Rate(n, time.perf_counter() - t0, rebuilt.bytes, cpu_seconds=time.process_time() - c0)
        finally:
            for (name,) in conn.execute("select nspname from pg_namespace where nspname like %s",
                                        (prefix + "%",)).fetchall():
                conn.execute(f"drop schema {name} cascade")
            conn.execute("delete from projection_offsets where projector like %s", (prefix + "%",))
            conn.close()
    ctx.rates.update({BASELINE_COPY: copied, REBUILD: rebuilt})
    return [Section("Projection rebuild", RATE_COLUMNS, [
        rate_row("COPY of the shaped rows (baseline)", copied),
        rate_row("threadline replay support", rebuilt, copied),
    ], text=["`threadline replay support` on a topic of N resolved contacts: consume from offset 0, decode, shape "
             "(sentiment included), COPY into staging tables and upsert, offsets in the same transaction, then the "
             "blue/green swap. The baseline is a plain COPY of the same rows (shaped beforehand, not timed) into "
             "the same tables (contacts, customer_identities, customers) of an empty schema, in one transaction."],
       notes=[f"ratio: rebuild events/s ÷ COPY rows/s = {fmt_ratio(rebuilt.ratio(copied))} (aim: 0.5 or more).",
              "CPU µs/event: CPU time of the bench process (the rebuild runs in it; PostgreSQL's own CPU is "
              "not counted) ÷ events.",
              "Freshness through the whole pipeline has its own section."])]
