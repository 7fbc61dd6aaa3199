"""Per-customer conversation state size and the pure core's CPU per contact, on the bench
population (the traffic generator's webhooks, mapped by the connectors, resolved by the identity
graph). Not a test: run it by hand.

    .venv/bin/python tests/perf/conversation_state.py [--customers 2000]

Three arrival orders of the same contacts: in event-time order, reversed, and "history after live"
(the later half first). The states' JSON sizes (what the worker's table stores per customer) and
process CPU per contact of ``Stitcher.apply`` are printed; the folded conversations of the three
orders are compared. A state's size is the bytes the conversations stage stores for it
(``streams.stage.write_table``: orjson of the state with its partition ``p``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import orjson

from connectors.base import MapContext
from connectors.contact import to_record
from streams.conversations import Stitcher, fold
from streams.identity import IdentityGraph
from tests.perf.mapping_cpu import SECRETS, requests
from threadline.settings import Settings
from connectors.webhooks import handle


def contacts(customers: int) -> list[dict]:
    settings = Settings(_env_file=None)
    ctx = MapContext.from_settings(settings, datetime.now(UTC))
    out = []
    for r in requests(customers):
        for c in handle(r, SECRETS, ctx, 1_000_000).contacts:
            out.append(to_record(c, datetime.now(UTC)))
    graph = IdentityGraph({})
    for rec in sorted(out, key=lambda r: (r["occurred_at"], r["event_id"])):
        graph.observe(rec)
    return [{**rec, "customer_id": graph.customer_of(rec["event_id"])} for rec in out]


def run(records: list[dict]) -> tuple[dict, list[dict], float]:
    s = Stitcher()
    states: dict[str, dict] = {}
    events: list[dict] = []
    wm = None
    t0 = time.process_time()
    for r in records:
        t = r["occurred_at"] if isinstance(r["occurred_at"], int) else int(r["occurred_at"].timestamp() * 1000)
        wm = max(wm or t, t)
        states[r["customer_id"]], out = s.apply(states.get(r["customer_id"]), r, wm=wm)
        events += out
    cpu = time.process_time() - t0
    for cust in sorted(states):
        states[cust], out = s.advance(states[cust], wm + 40 * 24 * 3_600_000)
        events += out
    return states, events, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=2000)
    args = ap.parse_args()
    recs = contacts(args.customers)
    ordered = sorted(recs, key=lambda r: (r["occurred_at"], r["event_id"]))
    half = len(ordered) // 2
    orders = {"in order": ordered, "reversed": ordered[::-1], "history after live": ordered[half:] + ordered[:half]}
    print(f"{len(recs)} contacts of {len({r['customer_id'] for r in recs})} customers")
    folds = {}
    for name, seq in orders.items():
        states, events, cpu = run(seq)
        sizes = sorted(len(orjson.dumps({**st, "p": 0})) for st in states.values())
        outbox = sorted(len(orjson.dumps(st["outbox"])) for st in states.values())
        folds[name] = fold(events)
        print(
            f"{name}: {cpu / len(seq) * 1e6:.0f} µs CPU per contact, {len(events) / len(seq):.2f} events per contact;"
            f" state per customer: mean {statistics.fmean(sizes):.0f} B, p50 {sizes[len(sizes) // 2]} B,"
            f" p99 {sizes[int(len(sizes) * 0.99)]} B, max {sizes[-1]} B (of which outbox mean"
            f" {statistics.fmean(outbox):.0f} B)"
        )
    first = folds["in order"]
    for name, f in folds.items():
        print(f"{name}: {len(f)} conversations, identical to in order: {f == first}")


if __name__ == "__main__":
    main()
