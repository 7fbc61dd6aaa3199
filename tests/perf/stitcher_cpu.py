"""Process CPU per contact of the conversation rules (``streams.conversations.Stitcher``) over the
bench batch, as one worker drives them, without Kafka. Not a test: run it by hand.

    .venv/bin/python tests/perf/stitcher_cpu.py [--events 40000] [--rounds 3] [--compare /work/main]

The batch is the bench's (``threadline.tools.bench.data.build_records``, seed 7, as
``threadline bench`` builds ``ctx.batch``). Customers are resolved the way the identity stage does
it: ``streams.identity.IdentityGraph`` on a plain dict observes the contacts in batch order, each at
graph position ``gen`` = its index; a contact re-keyed by a later one goes again to its new customer
(``apply`` with that position) and its old customer gets a ``moved`` command (``remove``), as
``streams.identity_stage.IdentityStage.publish`` sends them. The operations are computed once, in
this process, and written to a file; each measured run replays them in a fresh process:

- ``apply`` per contact with the watermark of the worker's clock (latest event time less the
  timer grace, one partition), and ``remove`` for each moved command;
- every ``--tick`` contacts, the timer: every customer whose ``next_deadline`` is before the
  watermark and was not handed out for that deadline yet is advanced (``advance``), in customer
  order, as ``streams.clocks.ClockScheduler.due`` and ``ConversationsStage.advance`` do.

Only the Stitcher calls are timed (process CPU, ``time.process_time``); the states live as JSON
bytes between calls, as in the worker's table, and the deadline index is kept outside the timed
calls. At the end every customer is advanced 40 days past the last
watermark (not timed: it freezes the conversations) and the events and final states are dumped
with orjson; ``--compare TREE`` runs this tree's code and ``TREE``'s alternately (``PYTHONPATH``),
``--rounds`` each, prints the medians and fails when the dumps (sha256 of every call's events and
every final state) differ by a single byte. ``--run OPS --dump FILE`` writes one run's dump, to
diff two trees' outputs when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def operations(events: int) -> list[tuple]:
    """The Stitcher calls of a worker over the bench batch (see the module docstring)."""
    from streams.identity import IdentityGraph, to_millis
    from threadline.tools.bench.data import build_records

    records, _keys = build_records(events)
    graph = IdentityGraph({})
    grace = 2000  # StitchRules.timer_grace_seconds
    ops: list[tuple] = []
    by_id: dict[str, dict] = {}
    wm: int | None = None
    for gen, rec in enumerate(records):
        change = graph.observe(rec, gen=gen)
        by_id[rec["event_id"]] = rec
        wm = max(wm if wm is not None else -(2**62), to_millis(rec["occurred_at"]) - grace)
        moved: dict[tuple[str, str], list[str]] = {}
        for eid, new, old in change.rekeyed:
            ops.append(("apply", new, {**by_id[eid], "customer_id": new}, wm, gen))
            moved.setdefault((old, new), []).append(eid)
        for (old, new), ids in sorted(moved.items()):
            ops.append(("remove", old, sorted(ids), new, gen, wm))
        assert change.customer_id is not None
        ops.append(("apply", change.customer_id, {**rec, "customer_id": change.customer_id}, wm, gen))
    return ops


def replay(ops: list[tuple], tick: int, sink) -> tuple[float, dict[str, int], dict[str, bytes]]:
    """Run the operations through this process's ``streams.conversations``: (CPU seconds of the
    Stitcher calls, the number of contacts applied, timed advances and events, the final states
    as orjson bytes). Each call's events
    go to ``sink`` as orjson bytes. As in the worker, a state is read from its table (JSON bytes,
    ``orjson.loads``) before a call and written back after it (with its partition ``p``), outside
    the timed calls, and no event is kept in memory."""
    import orjson

    from streams.conversations import Stitcher

    st = Stitcher()
    table: dict[str, bytes] = {}
    due: list[tuple[int, str]] = []  # (deadline, customer), stale entries skipped
    deadlines: dict[str, int | None] = {}
    ticked: dict[str, int] = {}  # handed out for this deadline already
    cpu, contacts, n_events, advances, wm = 0.0, 0, 0, 0, None

    def read(cid: str) -> dict | None:
        raw = table.get(cid)
        return None if raw is None else orjson.loads(raw)

    def write(cid: str, state: dict | None, new: dict, out: list[dict]) -> None:
        nonlocal n_events
        if new is not state:
            new["p"] = 0
            table[cid] = orjson.dumps(new)
        d = st.next_deadline(new)
        if d is not None and deadlines.get(cid) != d:
            heapq.heappush(due, (d, cid))
        deadlines[cid] = d
        if out:
            sink(orjson.dumps(out))
            n_events += len(out)

    for op in ops:
        kind, cid = op[0], op[1]
        state = read(cid)
        if kind == "apply":
            _, _, rec, wm, gen = op
            t0 = time.process_time()
            new, out = st.apply(state, rec, wm=wm, gen=gen)
            cpu += time.process_time() - t0
            contacts += 1
        else:
            _, _, ids, to, gen, wm = op
            t0 = time.process_time()
            new, out = st.remove(state, ids, to, gen=gen, wm=wm)
            cpu += time.process_time() - t0
            new["customer_id"] = cid  # as the conversations stage does
        write(cid, state, new, out)
        if kind == "apply" and contacts % tick == 0 and wm is not None:
            fell: list[str] = []
            while due and due[0][0] < wm:
                d, c = heapq.heappop(due)
                if deadlines.get(c) != d or ticked.get(c) == d:
                    continue
                ticked[c] = d
                fell.append(c)
            for c in sorted(fell):
                state = read(c)
                assert state is not None
                t0 = time.process_time()
                new, out = st.advance(state, wm)
                cpu += time.process_time() - t0
                advances += 1
                write(c, state, new, out)
    end = (wm or 0) + 40 * 24 * 3_600_000
    for c in sorted(table):
        state = read(c)
        assert state is not None
        new, out = st.advance(state, end)
        write(c, state, new, out)
    return cpu, {"contacts": contacts, "advances": advances, "events": n_events}, table


def run_one(ops_file: str, tick: int, dump: str | None) -> None:
    import orjson

    import streams.conversations

    with open(ops_file, "rb") as f:
        ops = pickle.load(f)
    digest = hashlib.sha256()
    sink = open(dump, "wb") if dump else None  # noqa: SIM115 (closed below)

    def take(blob: bytes) -> None:
        digest.update(blob + b"\n")
        if sink:
            sink.write(blob + b"\n")

    cpu, counts, table = replay(ops, tick, take)
    for cid in sorted(table):
        take(cid.encode() + b" " + table[cid])
    if sink:
        sink.close()
    print(
        orjson.dumps(
            {
                "cpu": cpu,
                **counts,
                "sha256": digest.hexdigest(),
                "module": streams.conversations.__file__,
            }
        ).decode()
    )


def measure(tree: Path, ops_file: str, tick: int, dump: str | None = None) -> dict:
    import orjson

    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run", ops_file, "--tick", str(tick)]
    if dump:
        cmd += ["--dump", dump]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tree)
    res = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert Path(res["module"]).resolve().is_relative_to(tree.resolve()), (res["module"], tree)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tick", type=int, default=200, help="contacts between two timer ticks")
    ap.add_argument("--compare", type=Path, help="another checkout of the project, run alternately with this one")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_one(args.run, args.tick, args.dump)
        return
    sys.path.insert(0, str(HERE))
    trees = {"this tree": HERE} | ({"compared": args.compare.resolve()} if args.compare else {})
    with tempfile.TemporaryDirectory(prefix="stitcher-cpu-") as tmp:
        t0 = time.perf_counter()
        ops = operations(args.events)
        ops_file = os.path.join(tmp, "ops.pickle")
        with open(ops_file, "wb") as f:
            pickle.dump(ops, f, protocol=pickle.HIGHEST_PROTOCOL)
        moves = sum(op[0] == "remove" for op in ops)
        customers = len({op[1] for op in ops})
        print(
            f"{args.events:,} contacts, {customers:,} customers, {moves:,} moved commands "
            f"({time.perf_counter() - t0:.1f} s to build); rounds: {args.rounds}, tick every {args.tick} contacts"
        )
        per: dict[str, list[float]] = {name: [] for name in trees}
        digests: dict[str, set[str]] = {name: set() for name in trees}
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                res = measure(tree, ops_file, args.tick)
                us = res["cpu"] / res["contacts"] * 1e6
                per[name].append(us)
                digests[name].add(res["sha256"])
                print(
                    f"round {rnd + 1} {name} ({tree}): {us:.1f} µs CPU per contact ({res['advances']:,} advances, {res['events']:,} events)"
                )
        for name in trees:
            print(f"{name}: median {statistics.median(per[name]):.1f} µs CPU per contact ({per[name]})")
        if args.compare:
            ratio = statistics.median(per["this tree"]) / statistics.median(per["compared"])
            print(f"this tree ÷ compared: {ratio:.3f} ({(1 - ratio) * 100:.1f}% less CPU)")
            same = len(digests["this tree"] | digests["compared"]) == 1
            print(f"events and states byte-identical in every round: {same} (sha256 {sorted(digests['compared'])})")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
