"""The baseline suites every later figure divides by: the codec (pure CPU) and the raw Kafka
clients (kafka-python and aiokafka, produce and consume)."""

from __future__ import annotations

import time


from threadline.benchkit import (
    BASELINE_CONSUME_AIO,
    BASELINE_CONSUME_KP,
    BASELINE_DECODE,
    BASELINE_ENCODE,
    BASELINE_PRODUCE_AIO,
    BASELINE_PRODUCE_KP,
    DEFAULT_WARMUP,
    PRODUCER_BATCH_BYTES,
    PRODUCER_LINGER_MS,
    RATE_COLUMNS,
    BenchContext,
    Rate,
    Section,
    bench_topics,
    consume_aiokafka,
    consume_kafka_python,
    fmt_ratio,
    produce_aiokafka,
    produce_kafka_python,
    rate_row,
)


def measure_codec(
    codec, records: list[dict], *, warmup: int = DEFAULT_WARMUP, topic: str | None = None
) -> tuple[list[bytes], Rate, Rate]:
    """Encode every record once (timed), then decode every value (timed). Pure CPU.

    ``topic`` is the topic the encoding is for (the Confluent codec registers ``<topic>-value``);
    it defaults to contacts.v1, so a bench run adds no subject to a registry.
    """
    import schemas
    from threadline.catalog import CONTACTS

    topic = topic or CONTACTS.name
    for r in records[:warmup]:
        codec.encode(topic, schemas.CONTACT, r)
    t0, c0 = time.perf_counter(), time.process_time()
    values = [codec.encode(topic, schemas.CONTACT, r) for r in records]
    encode = Rate(len(values), time.perf_counter() - t0, sum(map(len, values)), cpu_seconds=time.process_time() - c0)
    return values, encode, measure_decode(codec, values, records, warmup=warmup)


def measure_decode(codec, values: list[bytes], records: list[dict], *, warmup: int = DEFAULT_WARMUP) -> Rate:
    """Decode every value (timed, process CPU beside it), keeping what was decoded as a consumer's
    batch does; checks that the round trip gave the records back."""
    for v in values[:warmup]:
        codec.decode(v)
    t0, c0 = time.perf_counter(), time.process_time()
    decoded = [codec.decode(v) for v in values]
    decode = Rate(len(decoded), time.perf_counter() - t0, sum(map(len, values)), cpu_seconds=time.process_time() - c0)
    if decoded and decoded[0].record != records[0]:
        raise RuntimeError("codec round trip changed the record: the decode figures are meaningless")
    return decode


def codec_suite(ctx: BenchContext) -> list[Section]:
    """Encode and decode the batch with the project's codec (measured while the batch was built)."""
    b, enc, dec = ctx.batch, ctx.rates[BASELINE_ENCODE], ctx.rates[BASELINE_DECODE]
    event = Section(
        "Event",
        ["property", "value"],
        [
            [
                "record",
                "`threadline.contact.Contact` (schemas/avro/contact, latest), built with "
                "`connectors.contact.ContactIn` + `to_record`; nine channels, five languages",
            ],
            ["codec", b.codec_name],
            [
                "mean encoded value",
                f"{b.mean_value_bytes:.1f} bytes (min {min(map(len, b.values))}, max {max(map(len, b.values))})",
            ],
            ["mean key", f"{b.mean_key_bytes:.1f} bytes (`partition_key`: primary identity)"],
            ["events per measurement", f"{ctx.events:,} (+ {ctx.warmup:,} warm-up, not counted)"],
            [
                "topic partitions",
                f"{_partitions()} (as contacts.v1), replication factor {ctx.settings.kafka.replication_factor}",
            ],
        ],
    )
    fresh = _fresh_decode(ctx)
    plain = _fastavro_decode(ctx)
    codec = Section(
        "Codec (pure CPU)",
        RATE_COLUMNS,
        [
            rate_row("encode", enc),
            rate_row("decode (the encoding codec)", dec, enc),
            *([rate_row("decode (a new codec: writer schema from the registry)", fresh, enc)] if fresh else []),
            *([rate_row("decode with fastavro instead of the compiled reader", plain, enc)] if plain else []),
        ],
        text=[f"{b.codec_name}, one record at a time, as the gateway and the workers call it."],
        notes=[
            "ratio: decode events/s ÷ encode events/s. MB/s counts encoded bytes. CPU µs/event: "
            "process CPU time ÷ events.",
            "A new codec is what a consumer in another process has: it fetches the writer schema by id. "
            "A writer schema equal to today's reader (parsing canonical form, compared once per schema id) "
            "is read directly with the reader's parsed schema, by its compiled reader "
            "(`schemas.avro_reader.compile_reader`); an older writer is resolved to the reader by fastavro.",
            "decode with fastavro: the new codec's reads with fastavro's `schemaless_reader` where the compiled "
            "reader reads (as the codec read before it had one), in this run, for comparison.",
        ],
    )
    return [event, codec]


def _fresh_decode(ctx: BenchContext) -> Rate | None:
    """Decode the batch with a codec that did not encode it (the Confluent codec fetches the
    writer schema from the registry, as another process does)."""
    from schemas.codec import make_codec

    codec = make_codec(ctx.settings)
    if type(codec).__name__ != "ConfluentCodec":
        return None
    return measure_decode(codec, ctx.batch.values, ctx.batch.records, warmup=ctx.warmup)


def _fastavro_decode(ctx: BenchContext) -> Rate | None:
    """The new codec's decode with each plan's compiled reader left out (fastavro reads)."""
    import dataclasses
    import struct

    from schemas.codec import make_codec

    codec = make_codec(ctx.settings)
    if type(codec).__name__ != "ConfluentCodec":
        return None
    plans: dict[int, object] = {}

    class Fastavro:
        def decode(self, data: bytes):
            (schema_id,) = struct.unpack_from(">I", data, 1)
            plan = plans.get(schema_id)
            if plan is None:
                plan = plans[schema_id] = dataclasses.replace(codec.plan(schema_id), compiled=None)
            return plan.read_at(data, 5)

    return measure_decode(Fastavro(), ctx.batch.values, ctx.batch.records, warmup=ctx.warmup)


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
    with bench_topics(s, [t_kp, t_aio, t_warm], groups=[g_kp, g_aio, g_warm_kp, g_warm_aio], console=ctx.console):
        with ctx.progress() as progress:
            p_kp = produce_kafka_python(
                s, t_kp, values, keys, warmup=ctx.warmup, warmup_topic=t_warm, progress=progress
            )
            p_aio = produce_aiokafka(s, t_aio, values, keys, warmup=ctx.warmup, warmup_topic=t_warm, progress=progress)
            # Warm-up reads of the warm-up topic (not counted), then the timed reads of one topic.
            consume_kafka_python(s, t_warm, ctx.warmup, group=g_warm_kp)
            c_kp = consume_kafka_python(s, t_kp, n, group=g_kp, progress=progress)
            consume_aiokafka(s, t_warm, ctx.warmup, group=g_warm_aio)
            c_aio = consume_aiokafka(s, t_kp, n, group=g_aio, progress=progress)
    ctx.rates.update(
        {BASELINE_PRODUCE_KP: p_kp, BASELINE_PRODUCE_AIO: p_aio, BASELINE_CONSUME_KP: c_kp, BASELINE_CONSUME_AIO: c_aio}
    )
    enc, dec = ctx.rates[BASELINE_ENCODE], ctx.rates[BASELINE_DECODE]

    figures = Section(
        "Raw Kafka clients",
        RATE_COLUMNS,
        [
            rate_row("produce kafka-python", p_kp),
            rate_row("produce aiokafka", p_aio, p_kp),
            rate_row("consume kafka-python", c_kp),
            rate_row("consume aiokafka", c_aio, c_kp),
        ],
        text=[
            "Pre-encoded values and keys, no codec work in the timed loop. Produce: acks=all, "
            f"idempotent, linger {PRODUCER_LINGER_MS} ms, {PRODUCER_BATCH_BYTES // 1024} KiB batches, "
            "no compression, time includes the final flush (every record acknowledged). "
            "kafka-python's producer is `threadline.kafka.make_producer`. Consume: a new group from "
            "the earliest offset, both clients on the same topic, library defaults for fetch sizes "
            "(kafka-python `poll`, max 500 records per call; aiokafka `getmany`, everything buffered), "
            "timed from the end of the group join to the N-th record."
        ],
        notes=[
            "ratio: aiokafka ÷ kafka-python for the same operation.",
            f"group join + first metadata (not in the timed window): kafka-python "
            f"{c_kp.startup_seconds:.2f} s, aiokafka {c_aio.startup_seconds:.2f} s.",
        ],
    )
    ratios = Section(
        "Ratios",
        ["ratio", "value", "what it says"],
        [
            ["produce kafka-python / aiokafka", fmt_ratio(p_kp.ratio(p_aio)), "> 1: kafka-python produces faster"],
            ["consume kafka-python / aiokafka", fmt_ratio(c_kp.ratio(c_aio)), "> 1: kafka-python consumes faster"],
            ["consume / produce, kafka-python", fmt_ratio(c_kp.ratio(p_kp)), "read speed over write speed"],
            ["consume / produce, aiokafka", fmt_ratio(c_aio.ratio(p_aio)), "read speed over write speed"],
            [
                "codec encode / produce kafka-python",
                fmt_ratio(enc.ratio(p_kp)),
                "< 1: encoding one event costs more than producing it",
            ],
            [
                "codec decode / consume kafka-python",
                fmt_ratio(dec.ratio(c_kp)),
                "< 1: decoding one event costs more than consuming it",
            ],
        ],
        notes=[
            "Later benchmarks divide their figures by these baselines "
            "(`BenchContext.rates`, keys `produce.kafka-python`, `consume.aiokafka`, ...)."
        ],
    )
    return [figures, ratios]
