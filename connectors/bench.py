"""The connectors' benchmark (part of ``threadline bench``): contacts/s accepted by the gateway
and by the mbox importer, each as a ratio to the raw kafka-python producer rate of the same run.

* gateway, one contact per request: signed chat webhooks, 32 concurrent HTTP/1.1 clients, to a
  gateway (uvicorn, one worker) running as its own process; timed until the last 202, which
  comes only after Kafka acknowledged the event (acks=all);
* gateway, batched: Meta Messenger webhooks with 50 messaging events each (Meta batches);
* mbox importer: an mbox of generated multilingual messages (with signatures, quoted replies
  and an attachment), split, parsed, mapped, encoded and produced, until every record is
  acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets as pysecrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from threadline.benchkit import (BASELINE_PRODUCE_KP, RATE_COLUMNS, BenchContext, Rate, Section, bench_topics,
                              fmt_ratio, rate_row)
from threadline.process import free_port

CONCURRENCY = 32
BATCH = 50



def _start_gateway(ctx: BenchContext, port: int, contacts: str, dlq: str, keys: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **ctx.settings.to_env(), "THREADLINE_LOG_LEVEL": "WARNING", "THREADLINE_LOG_FORMAT": "json",
           "THREADLINE_GATEWAY_PORT": str(port), **{f"THREADLINE_{k.upper()}": v for k, v in keys.items()}}
    code = ("import uvicorn; from connectors.gateway import create_app; from schemas.codec import make_codec; "
            "from threadline.settings import Settings; "
            "from threadline.logging import configure_logging; s = Settings(); configure_logging(s); "
            f"app = create_app(s, codec_factory=lambda: make_codec(s), "
            f"contacts_topic={contacts!r}, dlq_topic={dlq!r}); "
            "uvicorn.run(app, host='127.0.0.1', port=s.gateway_port, log_config=None, access_log=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway did not start: {proc.stderr.read().decode()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("gateway did not answer /healthz within 60 s")


def _chat_bodies(n: int, run: str) -> list[bytes]:
    from connectors.generate import SAY

    langs = list(SAY)
    t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    return [json.dumps({"message_id": f"{run}-{i}", "session_id": f"s-{i // 5}", "visitor_id": f"v-{i % 997}",
                        "sent_at": (t0 + timedelta(seconds=i)).isoformat(), "text": SAY[langs[i % 5]]["dm"].format(order=100000 + i),
                        "login": {"email": f"visitor{i % 997}@example.it"}}).encode() for i in range(n)]


def _messenger_bodies(n_contacts: int, run: str) -> list[bytes]:
    from connectors.generate import SAY

    langs, t0, out = list(SAY), 1795336200000, []
    for b in range(0, n_contacts, BATCH):
        events = [{"sender": {"id": str(6800000000000000 + i % 997)}, "recipient": {"id": "1048"}, "timestamp": t0 + i,
                   "message": {"mid": f"m_{run}_{i}", "text": SAY[langs[i % 5]]["dm"].format(order=100000 + i)}}
                  for i in range(b, min(b + BATCH, n_contacts))]
        out.append(json.dumps({"object": "page", "entry": [{"id": "1048", "time": t0, "messaging": events}]}).encode())
    return out


async def _post_all(port: int, connector: str, bodies: list[bytes], secret: str) -> float:
    import httpx

    from connectors.signatures import signed_headers

    url = f"http://127.0.0.1:{port}/webhooks/{connector}"
    signed = [(b, signed_headers(connector, b, url, secret)) for b in bodies]
    queue = iter(signed)
    failures: list[str] = []

    async def worker(client):
        for body, headers in queue:
            r = await client.post(url, content=body, headers=headers)
            if r.status_code != 202:
                failures.append(f"{r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await client.get(f"http://127.0.0.1:{port}/healthz")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        seconds = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"gateway answered {len(failures)} requests with an error: {failures[0]}")
    return seconds


def _mbox(n: int) -> bytes:
    from connectors.generate import population, render, Step

    people = population(200, seed=5)
    t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    parts = []
    for i in range(n):
        c = people[i % len(people)]
        _, msg = render(Step(t0 + timedelta(seconds=i), c, "email", "email"))
        msg = msg.replace(b"Message-ID: <gen-", f"Message-ID: <b{i}-gen-".encode(), 1)
        quoted = b"\n\nOn Sat, 21 Nov 2026 Support <support@shop.example> wrote:\n> Could you send a photo?\n"
        parts.append(b"From " + c.email.encode() + b" Sun Nov 22 08:00:00 2026\n" + msg.replace(b"\n--==", quoted + b"\n--==", 1) + b"\n")
    return b"".join(parts)


def connectors_suite(ctx: BenchContext) -> list[Section]:
    """Gateway and mbox importer throughput, as ratios to the raw kafka-python produce rate."""
    from connectors.base import MapContext
    from connectors.importer import Ledger, run_import
    from connectors.mbox import records
    from connectors.sink import Sink
    from schemas.codec import make_codec
    from threadline.kafka import make_producer

    s, raw = ctx.settings, ctx.rates[BASELINE_PRODUCE_KP]
    n_single = min(ctx.events, 3000)
    n_batched = ctx.events
    n_mbox = min(ctx.events, 10000)
    keys = {"webhook_secret": pysecrets.token_hex(16), "meta_app_secret": pysecrets.token_hex(16)}
    names = [ctx.topic("gateway.contacts"), ctx.topic("gateway.dlq"), ctx.topic("mbox.contacts"), ctx.topic("mbox.dlq")]
    with bench_topics(s, names, console=ctx.console):
        port = free_port()
        proc = _start_gateway(ctx, port, names[0], names[1], keys)
        try:
            with ctx.console.status("gateway: warm-up, single-contact requests, batched requests ..."):
                asyncio.run(_post_all(port, "chat", _chat_bodies(200, f"{ctx.run_id}-warm"), keys["webhook_secret"]))
                single = Rate(n_single, asyncio.run(_post_all(port, "chat", _chat_bodies(n_single, ctx.run_id),
                                                               keys["webhook_secret"])))
                bodies = _messenger_bodies(n_batched, ctx.run_id)
                batched = Rate(n_batched, asyncio.run(_post_all(port, "meta", bodies, keys["meta_app_secret"])),
                               sum(map(len, bodies)))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        with ctx.console.status(f"mbox importer: {n_mbox:,} messages ..."):
            data = _mbox(n_mbox)
            sink = Sink(make_producer(s, client_id="threadline-bench-mbox"), make_codec(s),
                        contacts_topic=names[2], dlq_topic=names[3], component="bench")
            mctx = MapContext.from_settings(s)
            try:
                t0 = time.perf_counter()
                summary = run_import(((w, item) for w, _, item in records(data, mctx)), sink, Ledger(None),
                                     connector="mbox", source="bench")
                importer = Rate(summary.produced, time.perf_counter() - t0, len(data))
            finally:
                sink.producer.close(10)
            if summary.produced != n_mbox:
                raise RuntimeError(f"mbox importer produced {summary.produced} of {n_mbox}: {summary.rejected[:1]}")
    ctx.rates.update({"gateway.single": single, "gateway.batched": batched, "importer.mbox": importer})
    return [Section("Connectors", RATE_COLUMNS, [
        rate_row("raw produce kafka-python (baseline)", raw),
        rate_row("gateway, 1 contact per request", single, raw),
        rate_row(f"gateway, Messenger batches of {BATCH}", batched, raw),
        rate_row("mbox importer", importer, raw),
    ], text=["Contacts accepted per second. Gateway: signed provider webhooks over HTTP/1.1 from "
             f"{CONCURRENCY} concurrent clients to one uvicorn worker in its own process (the client runs in the "
             "bench process on the same 2 cores); each 202 is sent only after Kafka acknowledged (acks=all). "
             "The gateway verifies the signature, validates, maps, normalizes (phones, emails, language detection, "
             "facts), encodes with the project's codec and produces. mbox importer: split, parse MIME, strip quotes "
             "and signatures, detect the language, encode, produce, wait for every acknowledgment."],
       notes=["ratio: contacts/s ÷ the raw kafka-python produce rate of the same run (pre-encoded values, no HTTP).",
              f"MB/s: request bodies (gateway) or mbox bytes (importer). Single-request count capped at {n_single:,}, "
              f"mbox at {n_mbox:,} messages.",
              f"aim for the gateway: ≥ 0.30× — one contact per request reached {fmt_ratio(single.ratio(raw))}, "
              f"batched {fmt_ratio(batched.ratio(raw))}."])]
