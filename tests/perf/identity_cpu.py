"""Process CPU per contact of the identity stage's runner without Kafka: ``IdentityRunner.process``
(the stage's rules, its outputs, each changed table key as a changelog record) and the write of a
batch's changelog records to the tables' RocksDB stores (what ``IdentityRunner.acknowledged`` does
once the broker has them), over the bench batch. Not a test: run it by hand.

    .venv/bin/python tests/perf/identity_cpu.py [--events 20000] [--rounds 5] [--compare /work/other]

The batch is the bench's (``threadline.tools.bench.data.build_records``, seed 7), made once in this
process as the route stage forwards it to the graph topic: contacts.v1 values of the Avro
single-object codec (no registry), header ``kind=contact``, one partition. Each measured run reads
them in a fresh process, in batches of ``--batch`` records, with the stores in a temporary folder,
the collector tuned as a started worker's (``streams.worker.GC_GEN0_THRESHOLD``), logging as the
bench's workers (structlog JSON at WARNING). Timed (process CPU): ``process`` and the stores'
writes, apart (``rules``, ``stores``). Every output record (topic, key, value, headers) in order
goes into a sha256 (``outputs``), and every changelog record into another (``changelog``: its
format is the stores' own, so a change of the format changes it and nothing else);
``--compare TREE`` runs this tree and ``TREE`` alternately (``PYTHONPATH``) and prints the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def records(events: int) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of the graph topic's records for the bench batch."""
    import schemas
    from schemas.codec import SingleObjectCodec
    from streams.topology import StreamTopics
    from threadline.tools.bench.data import build_records

    names = StreamTopics.prefixed("t")
    codec = SingleObjectCodec()
    raw, _keys = build_records(events)
    return [(i, r["event_id"].encode(), codec.encode(names.contacts, schemas.CONTACT, r)) for i, r in enumerate(raw)]


def run_one(file: str, batch: int) -> dict:
    from types import SimpleNamespace

    from schemas.codec import SingleObjectCodec
    from streams.identity_runner import IdentityRunner
    from streams.rules import IdentityRules
    from streams.stage import Outputs, StageContext
    from streams.topology import StreamTopics
    from streams.worker import GC_GEN0_THRESHOLD
    from threadline import collector
    from threadline.logging import configure_logging
    from threadline.settings import CodecKind, LogFormat, Settings

    with open(file, "rb") as f:
        data = pickle.load(f)
    home = tempfile.mkdtemp(prefix="identity-cpu-")
    settings = Settings(
        _env_file=None, home=home, codec=CodecKind.SINGLE_OBJECT, log_format=LogFormat.JSON, log_level="WARNING"
    )
    configure_logging(settings, force=True)
    names = StreamTopics.prefixed("t")
    ctx = StageContext(None, "perf", names.dlq)  # type: ignore[arg-type]

    async def make() -> IdentityRunner:  # a Service wants a running loop to be made in
        return IdentityRunner(
            settings, "perf", names, ctx, SingleObjectCodec(), IdentityRules(), store_dir=Path(home) / "tables"
        )

    runner = asyncio.run(make())
    runner.writer = b"perf/1"
    recs = [
        SimpleNamespace(topic=names.graph, partition=0, offset=o, key=k, value=v, headers=[("kind", b"contact")])
        for o, k, v in data["records"]
    ]
    outputs, changelog = hashlib.sha256(), hashlib.sha256()
    cpu = {"rules": 0.0, "stores": 0.0}
    sizes = {"outputs": 0, "changelog": 0}
    offsets = {table.topic: -1 for table in runner.tables}
    collector.tune_gc(GC_GEN0_THRESHOLD)
    for i in range(0, len(recs), batch):
        out = Outputs()
        t0 = time.process_time()
        written = runner.process(recs[i : i + batch], out)
        t1 = time.process_time()
        for table, items in written:  # as ``acknowledged``, the changelog's offsets counted here
            if items:
                offsets[table.topic] += len(items)
                table.persist(items, offsets[table.topic], runner.writer)
            else:
                table.trim()
        cpu["rules"] += t1 - t0
        cpu["stores"] += time.process_time() - t1
        for topic, key, value, headers, partition in out.records:
            sizes["outputs"] += len(value or b"")
            outputs.update(repr((topic, key, value, sorted((headers or {}).items()), partition)).encode())
        for table, items in written:
            for kb, vb in items:
                sizes["changelog"] += len(kb) + len(vb or b"")
                changelog.update(repr((table.topic, kb, vb)).encode())
    for table in runner.tables:
        table.store.close()
    shutil.rmtree(home, ignore_errors=True)
    import streams.identity_runner as mod

    return {
        "contacts": len(recs),
        "cpu": cpu,
        "bytes": sizes,
        "sha256": {"outputs": outputs.hexdigest(), "changelog": changelog.hexdigest()},
        "module": mod.__file__,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="records per stage batch")
    ap.add_argument("--compare", type=Path, help="another checkout of the project, run alternately with this one")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.batch)))
        return
    sys.path.insert(0, str(HERE))
    from tests.perf.stages_cpu import measure

    trees = {"this tree": HERE} | ({"compared": args.compare.resolve()} if args.compare else {})
    with tempfile.TemporaryDirectory(prefix="identity-cpu-") as tmp:
        file = os.path.join(tmp, "records.pickle")
        with open(file, "wb") as f:
            pickle.dump({"records": records(args.events)}, f, protocol=pickle.HIGHEST_PROTOCOL)
        per: dict[str, dict[str, list[float]]] = {n: {"rules": [], "stores": [], "both": []} for n in trees}
        digests: dict[str, set[str]] = {n: set() for n in trees}
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                res = measure(tree, file, args.batch, script=__file__)
                us = {k: v / res["contacts"] * 1e6 for k, v in res["cpu"].items()}
                us["both"] = us["rules"] + us["stores"]
                for k, v in us.items():
                    per[name][k].append(v)
                digests[name].add(res["sha256"]["outputs"])
                print(
                    f"round {rnd + 1} {name}: process {us['rules']:.1f} µs, stores {us['stores']:.1f} µs per contact "
                    f"(CPU); bytes per contact: outputs {res['bytes']['outputs'] / res['contacts']:.0f}, "
                    f"changelog {res['bytes']['changelog'] / res['contacts']:.0f}; {res['sha256']}"
                )
        for name in trees:
            m = {k: statistics.median(v) for k, v in per[name].items()}
            print(f"{name}: median process {m['rules']:.1f} µs, stores {m['stores']:.1f} µs, both {m['both']:.1f} µs")
        if args.compare:
            same = len(digests["this tree"] | digests["compared"]) == 1
            print(f"outputs byte-identical in every round: {same}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
