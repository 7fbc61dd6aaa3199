"""CPU per webhook of the gateway's pure part (signature + mapping + normalization, i.e.
``connectors.webhooks.handle``) on the traffic generator's payloads. Not a test: run it by hand.

    .venv/bin/python tests/perf/mapping_cpu.py [--customers 400] [--passes 3]

The first pass is traffic the process has not seen (every customer's texts carry their own order
number); later passes replay the same payloads, as provider retries do. Times are process CPU
(``time.process_time``), after one detection to load lingua's models.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from datetime import UTC, datetime

from connectors.base import MapContext, WebhookRequest
from connectors.generate import traffic
from connectors.normalize import detect_language
from connectors.signatures import signed_headers
from connectors.webhooks import handle
from threadline.settings import Settings

SECRETS = {
    "twilio_auth_token": "t",
    "meta_app_secret": "m",
    "x_consumer_secret": "x",
    "shopify_webhook_secret": "s",
    "webhook_secret": "w",
}
SECRET_OF = {
    "twilio": "twilio_auth_token",
    "twilio-voice": "twilio_auth_token",
    "meta": "meta_app_secret",
    "x": "x_consumer_secret",
    "shopify": "shopify_webhook_secret",
}


def requests(customers: int) -> list[WebhookRequest]:
    now = datetime.now(UTC)
    out = []
    for connector, body in traffic(customers, seed=42):
        url = f"https://hooks.example.org/webhooks/{connector}"
        hdrs = signed_headers(connector, body, url, SECRETS[SECRET_OF.get(connector, "webhook_secret")])
        out.append(WebhookRequest(connector, url, hdrs, body, now))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=400)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    reqs = requests(args.customers)
    settings = Settings(_env_file=None)
    ctx = MapContext.from_settings(settings, datetime.now(UTC))
    detect_language("warm the detector up with a sentence", ctx.languages)
    print(
        f"{len(reqs)} webhooks ({', '.join(f'{k} {v}' for k, v in Counter(r.connector for r in reqs).most_common())})"
    )
    for p in range(args.passes):
        per: list[float] = []
        by: dict[str, list[float]] = {}
        for r in reqs:
            t0 = time.process_time_ns()
            out = handle(r, SECRETS, ctx, 1_000_000)
            dt = (time.process_time_ns() - t0) / 1000
            assert out.status == 202, (r.connector, out)
            per.append(dt)
            by.setdefault(r.connector, []).append(dt)
        per.sort()
        print(
            f"pass {p + 1}: mean {statistics.fmean(per):.0f} µs, p50 {per[len(per) // 2]:.0f} µs, "
            f"p99 {per[int(len(per) * 0.99)]:.0f} µs per webhook; by connector (mean µs): "
            + ", ".join(f"{k} {statistics.fmean(v):.0f}" for k, v in sorted(by.items()))
        )


if __name__ == "__main__":
    main()
