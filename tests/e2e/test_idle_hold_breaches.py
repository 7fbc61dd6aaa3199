"""A story of yesterday told at live pace, on the real broker, as the demo tells Giulia's: her
order (two days ago: email, phone, order number), her tweet (26 h ago, Twitter target 15 min), and,
about 12 s later in wall time, her DM of 6 minutes after the tweet giving the order number, which
merges the twitter customer into the order's.

Between the tweet and the DM every partition is idle. Without a hold its watermark follows the
wall clock after THREADLINE_STREAMS_IDLE_SECONDS and breaches the tweet's clock, 25 h past due, on
the twitter customer's conversation, which the merge then ends `merged_into`: a breach no replay
emits (the replay reads the DM before any partition is idle). With
THREADLINE_STREAMS_IDLE_HOLD_SECONDS=30 the idle watermark advances from the tweet's time at the
wall clock's pace for 30 s, the DM arrives first, and no breach is emitted: live, as in a replay.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from streams.identity import customer_id_for
from tests.integration.streams.stream_helpers import make_contact, settle, stream_run


def twitter_customer_events(services, tmp_path, hold: int) -> tuple[str, list[dict]]:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).replace(microsecond=0)
    tweet_at = now - timedelta(hours=26)
    handle = {"kind": "social", "value": f"giulia_{tag}", "platform": "twitter", "primary": True}
    order_number = {"kind": "order_number", "value": f"7{int(tag, 16) % 10**8:08d}"}
    order = make_contact(
        f"{tag}-order",
        "store",
        [
            {"kind": "email", "value": f"giulia.{tag}@example.it", "primary": True},
            {"kind": "phone", "value": f"+39347{int(tag, 16) % 10**7:07d}"},
        ],
        base=now - timedelta(days=2),
        facts=[order_number],
        text="Order placed",
    )
    tweet = make_contact(f"{tag}-tweet", "twitter", [handle], base=tweet_at, text="My order arrived broken")
    dm = make_contact(f"{tag}-dm", "twitter", [handle], base=tweet_at, minutes=6, facts=[order_number], text="Order")
    with stream_run(services, "hold", tmp_path) as world:
        world.worker(THREADLINE_STREAMS_IDLE_HOLD_SECONDS=str(hold))
        conversations, identities = world.reader("conversations"), world.reader("identities")
        world.producer.contacts(world.topics.contacts, [order])
        [t] = world.producer.contacts(world.topics.contacts, [tweet])
        twitter_customer = customer_id_for(t["event_id"])
        conversations.wait_for(lambda vs: any(v["customer_id"] == twitter_customer for v in vs), what="the tweet")
        time.sleep(12.0)  # the demo's pace: every partition idle for longer than the idle time (5 s)
        world.producer.contacts(world.topics.contacts, [dm])
        identities.wait_for(
            lambda vs: any(v["event_type"] == "merged" and twitter_customer in v["related_customer_ids"] for v in vs),
            what="the merge",
        )
        conversations.wait_for(
            lambda vs: any(v["customer_id"] == twitter_customer and v["event_type"] == "merged_into" for v in vs),
            what="the twitter customer's conversation merged away",
        )
        events = [v for v in settle(conversations, quiet=5.0) if v["customer_id"] == twitter_customer]
        conversations.close()
        identities.close()
    return twitter_customer, events


@pytest.mark.parametrize("hold, breached", [(0, True), (30, False)])
def test_a_clock_of_yesterday_is_breached_live_before_the_merge_only_without_a_hold(services, tmp_path, hold, breached):
    _, events = twitter_customer_events(services, tmp_path, hold)
    kinds = [e["event_type"] for e in events]
    assert "merged_into" in kinds
    assert ("sla_breached" in kinds) is breached, kinds
