"""Process CPU per contact of the worker's route and conversations stages (``RouteRunner.process``,
``ConversationsStage.process`` and its timer's ``tick``) over the bench batch, without Kafka. Not
a test: run it by hand.

    .venv/bin/python tests/perf/stages_cpu.py [--events 15000] [--rounds 5] [--compare /work/main]

The batch is the bench's (``threadline.tools.bench.data.build_records``, seed 7), its contacts
resolved by ``streams.identity.IdentityGraph`` as ``tests/perf/stitcher_cpu.py`` resolves them
(``operations``: a contact re-keyed by a later one goes again to its new customer, its old one gets
a ``moved`` command). The records are made once, in this process, with the Avro single-object
codec (no registry): contacts.v1 values for the route stage, contacts.resolved.v1 values (customer
id set, header ``gen``) and commands for the conversations stage, on six partitions. Each measured
run replays them in a fresh process, in batches of ``--batch`` records:

- ``route``: ``RouteRunner.process`` of each batch of contacts;
- ``conversations``: ``ConversationsStage.process`` of each batch, and after each batch the timer
  (``ConversationsStage.tick`` on every partition); the table is the worker's (``create_app``'s
  conversations table, faust's RocksDB store in a temporary folder), read and written as the stage
  does in a worker.

Only those calls are timed (process CPU). Every output record (topic, key, value, headers) and
changelog record, in order, and at the end every state in the table go into a sha256; ``--compare TREE`` runs this tree and ``TREE``
alternately (``PYTHONPATH``), ``--rounds`` each, prints the medians and fails when a digest differs.
The stages log as the bench's workers do (structlog JSON at WARNING, to a discarded stderr), and
the garbage collector is tuned as a started worker's (``streams.worker.GC_GEN0_THRESHOLD``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
PARTITIONS = 6


def records(events: int) -> dict:
    """The stages' input records (see the module docstring), as plain tuples."""
    import schemas
    from schemas.codec import SingleObjectCodec
    from streams.topology import StreamTopics
    from tests.perf.stitcher_cpu import operations
    from threadline.tools.bench.data import build_records

    names = StreamTopics.prefixed("t")
    codec = SingleObjectCodec()
    raw, _keys = build_records(events)
    contacts = [
        (names.contacts, i % PARTITIONS, i, r["event_id"].encode(), codec.encode(names.contacts, schemas.CONTACT, r))
        for i, r in enumerate(raw)
    ]
    resolved: list[tuple] = []
    for op in operations(events):
        cid = op[1]
        p = zlib.crc32(cid.encode()) % PARTITIONS
        if op[0] == "apply":
            _, _, rec, _wm, gen = op
            value = codec.encode(names.resolved, schemas.CONTACT, rec)
            resolved.append((names.resolved, p, len(resolved), cid.encode(), value, (("gen", b"%d" % gen),)))
        else:
            _, _, ids, to, gen, _wm = op
            cmd = json.dumps({"type": "moved", "to": to, "event_ids": ids, "gen": gen}).encode()
            resolved.append((names.commands, p, len(resolved), cid.encode(), cmd, ()))
    return {"contacts": contacts, "resolved": resolved, "n": len(raw)}


def run_one(file: str, batch: int) -> dict:
    from types import SimpleNamespace

    from schemas.codec import SingleObjectCodec
    from streams.app import create_app
    from streams.clocks import ClockScheduler
    from streams.conversations import Stitcher
    from streams.conversations_stage import ConversationsStage
    from streams.route_runner import RouteRunner
    from streams.stage import Outputs, StageContext
    from streams.topology import StreamTopics
    from streams.worker import GC_GEN0_THRESHOLD
    from threadline import collector
    from threadline.logging import configure_logging
    from threadline.settings import CodecKind, LogFormat, Settings

    with open(file, "rb") as f:
        data = pickle.load(f)
    home = tempfile.mkdtemp(prefix="stages-cpu-")  # the table's RocksDB databases (removed by the caller)
    settings = Settings(
        _env_file=None, home=home, codec=CodecKind.SINGLE_OBJECT, log_format=LogFormat.JSON, log_level="WARNING"
    )
    configure_logging(settings, force=True)
    names = StreamTopics.prefixed("t")
    codec = SingleObjectCodec()
    ctx = StageContext(None, "perf", names.dlq)  # type: ignore[arg-type]
    digest = {"route": hashlib.sha256(), "conversations": hashlib.sha256()}
    letters = {"route": 0, "conversations": 0}

    def take(name: str, out: Outputs) -> None:
        h = digest[name]
        for topic, key, value, headers, partition in out.records:
            letters[name] += topic == names.dlq
            h.update(repr((topic, key, value, sorted((headers or {}).items()), partition)).encode())
        for _table, partition, kb, vb in out.changelog:
            h.update(repr((partition, kb, vb)).encode())
        out.records.clear()
        out.changelog.clear()

    cpu = {"route": 0.0, "conversations": 0.0}
    runner = RouteRunner(settings, "perf", names.contacts, names.graph, ctx, codec)
    recs = [
        SimpleNamespace(topic=t, partition=p, offset=o, key=k, value=v, headers=())
        for t, p, o, k, v in data["contacts"]
    ]

    table = create_app(settings, app_id="stages-cpu", topics=names).tables["conversations"]
    stage = ConversationsStage(
        ctx,
        codec,
        SimpleNamespace(names=names, conv_table=table),  # type: ignore[arg-type]
        Stitcher(),
        ClockScheduler(lateness_ms=2000, idle_seconds=1e9),
    )
    events = [
        SimpleNamespace(
            key=k,
            value=v,
            message=SimpleNamespace(topic=t, partition=p, offset=o, headers=h),
        )
        for t, p, o, k, v, h in data["resolved"]
    ]
    active = set(range(PARTITIONS))
    collector.tune_gc(GC_GEN0_THRESHOLD)  # as the worker once started: what exists frozen, young collections rarer
    for i in range(0, len(recs), batch):
        out = Outputs()
        t0 = time.process_time()
        runner.process(recs[i : i + batch], out)
        cpu["route"] += time.process_time() - t0
        take("route", out)
    for i in range(0, len(events), batch):
        for step in (
            lambda out: stage.process(events[i : i + batch], out),
            lambda out: stage.tick(active, 0, time.monotonic(), out),
        ):
            out = Outputs()
            t0 = time.process_time()
            step(out)
            cpu["conversations"] += time.process_time() - t0
            take("conversations", out)
    store = table.data
    for kb, vb in sorted(kv for p in range(PARTITIONS) for kv in store._db_for_partition(p).items()):
        if kb != store.offset_key:
            digest["conversations"].update(kb + b" " + vb)
    shutil.rmtree(home, ignore_errors=True)
    import streams.conversations_stage as mod

    return {
        "contacts": data["n"],
        "cpu": cpu,
        "sha256": {k: h.hexdigest() for k, h in digest.items()},
        "dead_letters": letters,
        "module": mod.__file__,
    }


def measure(tree: Path, file: str, batch: int, script: str = __file__) -> dict:
    """``script --run file`` in a process of its own importing the project from ``tree``: its
    result (the last line of its output, JSON), checked to come from that tree's code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(script).resolve()), "--run", file, "--batch", str(batch)]
    done = subprocess.run(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True, cwd=tree
    )
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(res["module"]).resolve().is_relative_to(tree.resolve()), (res["module"], tree)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=15000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="records per stage batch")
    ap.add_argument("--compare", type=Path, help="another checkout of the project, run alternately with this one")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.batch)))
        return
    sys.path.insert(0, str(HERE))
    trees = {"this tree": HERE} | ({"compared": args.compare.resolve()} if args.compare else {})
    with tempfile.TemporaryDirectory(prefix="stages-cpu-") as tmp:
        t0 = time.perf_counter()
        file = os.path.join(tmp, "records.pickle")
        with open(file, "wb") as f:
            pickle.dump(records(args.events), f, protocol=pickle.HIGHEST_PROTOCOL)
        print(f"{args.events:,} contacts ({time.perf_counter() - t0:.1f} s to build); rounds: {args.rounds}")
        per: dict[str, dict[str, list[float]]] = {n: {"route": [], "conversations": [], "both": []} for n in trees}
        digests: dict[str, set[str]] = {n: set() for n in trees}
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                res = measure(tree, file, args.batch)
                us = {k: v / res["contacts"] * 1e6 for k, v in res["cpu"].items()}
                us["both"] = us["route"] + us["conversations"]
                for k, v in us.items():
                    per[name][k].append(v)
                digests[name].add(json.dumps(res["sha256"], sort_keys=True))
                print(
                    f"round {rnd + 1} {name}: route {us['route']:.1f} µs, conversations {us['conversations']:.1f} µs "
                    f"per contact (CPU); dead letters {res['dead_letters']}"
                )
        med = {n: {k: statistics.median(v) for k, v in per[n].items()} for n in trees}
        for name in trees:
            m = med[name]
            print(
                f"{name}: median route {m['route']:.1f} µs, conversations {m['conversations']:.1f} µs, "
                f"both {m['both']:.1f} µs CPU per contact"
            )
        if args.compare:
            for k in ("route", "conversations", "both"):
                saved = med["compared"][k] - med["this tree"][k]
                print(f"{k}: {saved:.1f} µs less per contact ({saved / med['compared'][k] * 100:.1f}% of compared)")
            same = len(digests["this tree"] | digests["compared"]) == 1
            print(f"outputs, changelog and states byte-identical in every round: {same} {sorted(digests['compared'])}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
