"""streams/clocks.py (the pure clock scheduler) and the conversations stage's tick dispatch:
which customers are due, handed out once per deadline, idle partitions on the wall clock,
partitions indexed when assigned; a due customer advanced in the stage, no command round trip."""

from __future__ import annotations

from types import SimpleNamespace

from streams.clocks import ClockScheduler
from streams.conversations import Stitcher
from streams.conversations_stage import ConversationsStage
from streams.rules import StitchRules
from streams.stage import Outputs
from streams.topology import StreamTopics

MIN = 60_000


def sched(**kw) -> ClockScheduler:
    return ClockScheduler(
        lateness_ms=kw.get("lateness", 1000), idle_seconds=kw.get("idle", 10.0), hold_seconds=kw.get("hold", 0.0)
    )


def test_a_partitions_watermark_is_its_latest_event_time_less_the_lateness_and_never_goes_back():
    s = sched(lateness=1000)
    assert s.see(0, 10_000, mono=1.0) == 9_000
    assert s.see(0, 5_000, mono=2.0) == 9_000  # a late record does not move it back
    assert s.see(0, None, mono=3.0) == 9_000  # a command carries no event time
    assert s.watermark(1) is None


def test_a_customer_is_due_once_per_deadline_when_its_partitions_watermark_passed_it():
    s = sched(lateness=0)
    s.remember("a", 5_000, 0)
    s.remember("b", 50_000, 0)
    s.see(0, 4_000, mono=0.0)
    assert s.due({0}, now_ms=0, mono=0.0) == []
    s.see(0, 6_000, mono=0.0)
    assert s.due({0}, now_ms=0, mono=0.0) == [("a", 6_000, 0)]
    assert s.due({0}, now_ms=0, mono=0.0) == []  # handed out once for that deadline
    s.remember("a", 5_500, 0)  # the stage advanced it and it has another deadline, also passed
    assert s.due({0}, now_ms=0, mono=0.0) == [("a", 6_000, 0)]
    s.remember("a", None, 0)  # nothing left that can fall due
    assert s.due({0}, now_ms=0, mono=0.0) == []


HOUR = 60 * MIN
NOW = 1_800_000_000_000  # the wall clock, ms


def yesterdays_tweet(hold: float) -> tuple[ClockScheduler, list]:
    """A story of yesterday told at live pace (the demo): a tweet of 26 h ago (its first response
    clock due 15 min after it) reaches partition 1; the DM that merges its customer away arrives
    10 s later in wall time. What the scheduler hands out while it waits for the DM."""
    tweet = NOW - 26 * HOUR
    s = sched(lateness=2000, idle=5.0, hold=hold)
    s.see(1, tweet, mono=0.0)
    s.remember("twitter-customer", tweet + 15 * MIN, 1)
    handed = []
    for second in range(11):  # the clock timer, every second, until the DM's records arrive
        handed += s.due({1}, now_ms=NOW + second * 1000, mono=float(second))
    return s, handed


def test_without_a_hold_an_idle_partition_breaches_yesterdays_clock_before_the_dm_arrives():
    """The live-only transient: after 5 idle seconds the watermark is the wall clock, 25 h past the
    clock's due time, so the clock is breached 5 s before the DM that merges it away."""
    s, handed = yesterdays_tweet(hold=0.0)
    assert [cid for cid, _, _ in handed] == ["twitter-customer"]
    assert s.watermark(1) == NOW + 10_000 - 2000


def test_within_the_hold_an_idle_partition_advances_from_its_event_time_at_the_wall_clocks_pace():
    """With a 30 s hold the watermark is the tweet's time plus the idle seconds: nothing is due
    before the DM arrives, as in a replay (where no partition is idle)."""
    s, handed = yesterdays_tweet(hold=30.0)
    assert handed == []
    assert s.watermark(1) == NOW - 26 * HOUR - 2000 + 10_000
    # the DM does not come: once idle for the hold, the partition follows the wall clock
    assert s.due({1}, now_ms=NOW + 31_000, mono=31.0) == [("twitter-customer", NOW + 29_000, 1)]


def test_contacts_that_arrive_as_they_happen_are_breached_on_time_with_or_without_a_hold():
    """Live traffic: the event time is the wall clock less the ingest delay (300 ms), so within the
    hold the watermark is where the wall clock puts it, less that delay: a 3 s clock nobody answers
    is handed out in the same second as without a hold."""
    when = {}
    for hold in (0.0, 30.0):
        s = sched(lateness=2000, idle=5.0, hold=hold)
        s.see(0, NOW - 300, mono=0.0)
        s.remember("chat", NOW + 3000, 0)
        when[hold] = [
            (second, cid) for second in range(10) for cid, _, _ in s.due({0}, now_ms=NOW + second * 1000, mono=second)
        ]
    assert when[0.0] == when[30.0] == [(6, "chat")]


def test_a_partition_with_no_event_time_yet_waits_for_the_hold_before_the_wall_clock():
    s = sched(lateness=0, idle=5.0, hold=30.0)
    s.remember("recovered", NOW - HOUR, 4)
    assert s.due({4}, now_ms=NOW, mono=0.0) == []
    assert s.due({4}, now_ms=NOW + 10_000, mono=10.0) == []  # idle, but no event time to advance
    assert s.due({4}, now_ms=NOW + 30_000, mono=30.0) == [("recovered", NOW + 30_000, 4)]


def test_the_hold_is_read_from_the_environment_and_off_by_default():
    from streams.rules import rules_from_settings
    from threadline.settings import Settings

    assert rules_from_settings(Settings().streams).stitch.idle_hold_seconds == 0
    held = rules_from_settings(Settings(streams_idle_hold_seconds="30").streams).stitch
    assert held.idle_hold_seconds == 30


def test_only_customers_of_partitions_this_worker_owns_are_due():
    s = sched(lateness=0)
    s.remember("a", 1_000, 3)
    s.see(3, 9_000, mono=0.0)
    assert s.due({0, 1}, now_ms=0, mono=0.0) == []
    assert s.due({3}, now_ms=0, mono=0.0) == [("a", 9_000, 3)]


def test_an_idle_partitions_watermark_follows_the_wall_clock_only_after_the_idle_time():
    s = sched(lateness=1000, idle=10.0)
    s.remember("a", 100_000, 2)
    s.see(2, 50_000, mono=100.0)
    assert s.due({2}, now_ms=500_000, mono=105.0) == []  # not idle long enough: event time rules
    assert s.watermark(2) == 49_000
    assert s.due({2}, now_ms=500_000, mono=111.0) == [("a", 499_000, 2)]
    assert s.watermark(2) == 499_000


def test_newly_assigned_partitions_are_indexed_from_the_recovered_states_and_only_once():
    s = sched(lateness=0)
    states = {"a": {"p": 1, "deadline": 7_000, "wm": 8_000}, "b": {"p": 2, "deadline": 1_000, "wm": 2_000}}
    reads = []

    def all_states():
        reads.append(1)
        return list(states.items())

    s.index({1}, all_states, lambda st: st["deadline"])
    assert s.due_index == {"a": (7_000, 1)} and s.watermark(1) == 8_000 and s.watermark(2) is None
    s.index({1}, all_states, lambda st: st["deadline"])
    assert len(reads) == 1  # nothing new assigned: the table is not read again
    assert s.due({1}, now_ms=0, mono=0.0) == [("a", 8_000, 1)]
    s.index({1, 2}, all_states, lambda st: st["deadline"])  # a rebalance gave it partition 2
    assert len(reads) == 2 and s.due_index["b"] == (1_000, 2)


class _Ctx:
    def __init__(self):
        self.dlq = []

    def to_dlq(self, out, event, reason):
        self.dlq.append(reason)


class _Codec:
    def encode(self, topic, subject, record):
        return repr(record).encode()


class _Table(dict):
    """A faust table as the stage writes it: ``data`` (a memory store) and its changelog topic."""

    changelog_topic = SimpleNamespace(get_topic_name=lambda: "t.conversations-changelog")

    @property
    def data(self):
        return self


def chat_contact(event_id: str, customer_id: str, t0: int) -> dict:
    """An inbound chat of a customer at ``t0`` (epoch ms), as the stage reads a resolved contact."""
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": t0,
        "recorded_at": t0,
        "channel": "chat",
        "direction": "inbound",
        "actor": {"role": "customer"},
        "event_type": "contact.received",
        "facts": [],
        "thread": {},
        "metadata": {},
    }


def _stage(rules: StitchRules) -> tuple[ConversationsStage, dict]:
    table = _Table()
    names = StreamTopics.prefixed("t")
    topo = SimpleNamespace(names=names, conv_table=table)
    scheduler = ClockScheduler(lateness_ms=0, idle_seconds=3600.0)
    return ConversationsStage(_Ctx(), _Codec(), topo, Stitcher(rules), scheduler), table


def test_a_due_clock_is_advanced_in_the_stage_and_its_events_go_to_conversations_not_to_a_commands_topic():
    rules = StitchRules()
    stage, table = _stage(rules)
    t0 = 1_795_000_000_000
    contact = chat_contact("c1", "cust", t0)
    state, _ = stage.stitcher.apply(None, contact, wm=t0)
    state["p"] = 4
    table["cust"] = state
    due = stage.stitcher.next_deadline(state)
    assert due is not None
    out = Outputs()
    assert stage.tick({4}, now_ms=0, mono=0.0, out=out) == 0  # indexed, but no watermark passed it yet
    stage.clocks.see(4, due + 1, mono=0.0)
    assert stage.tick({4}, now_ms=0, mono=0.0, out=out) == 1
    topics = {r[0] for r in out.records}
    assert topics == {stage.names.conversations}
    assert [(p, k) for _t, p, k, _v in out.changelog] == [(4, b'"cust"')]  # the state, once, on its partition
    assert table["cust"] is not state and table["cust"]["wm"] == due + 1 and table["cust"]["p"] == 4
    assert any(b"sla_breached" in r[2] or b"resolved" in r[2] for r in out.records)
    again = Outputs()
    assert stage.tick({4}, now_ms=0, mono=0.0, out=again) == 0  # handed out once for that deadline
    assert again.records == []


def test_a_partition_just_assigned_is_not_idle_before_the_idle_time_from_its_assignment():
    """A fresh worker (a replay from offset 0) looks at its clocks before the first record reached
    a partition: the partition is not idle yet, so the contacts of the past on their way to it are
    not placed behind a wall-clock watermark (every clock breached on arrival, then hit when the
    reply arrives: breach events a replay must not have)."""
    s = sched(lateness=1000, idle=10.0)
    now = 1_800_000_000_000
    assert s.due({4}, now_ms=now, mono=50_000.0) == []  # monotonic time is far from 0 on any machine
    assert s.watermark(4) is None
    assert s.see(4, 1_000_000, mono=50_003.0) == 999_000  # the first records: their own event time
    assert s.due({4}, now_ms=now, mono=50_012.0) == [] and s.watermark(4) == 999_000
    s.due({4}, now_ms=now, mono=50_013.0)  # 10 s without a record: idle, the wall clock
    assert s.watermark(4) == now - 1000


def test_a_partition_given_away_and_back_counts_its_idle_time_afresh():
    s = sched(lateness=0, idle=10.0)
    s.index({0, 1}, lambda: [], lambda st: None)
    s.due({0, 1}, now_ms=5_000_000, mono=100.0)
    s.index({0}, lambda: [], lambda st: None)  # a rebalance took partition 1
    s.index({0, 1}, lambda: [], lambda st: None)  # and gave it back much later
    s.due({0, 1}, now_ms=5_000_000, mono=500.0)
    assert s.watermark(0) == 5_000_000 and s.watermark(1) is None


class _CountingIndex(dict):
    """A due index that counts the customers a look at the clocks reads from it."""

    reads = 0

    def items(self):
        for kv in super().items():
            self.reads += 1
            yield kv

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_a_look_at_the_clocks_visits_the_customers_that_fell_due_not_every_customer_with_a_clock():
    """The timer looks every second: with 5,000 customers whose deadlines are hours away and one
    that fell due, it reads a handful of entries, not 5,000 (a fixed cost per second that a trickle
    of contacts paid per contact)."""
    s = sched(lateness=0)
    s.due_index = _CountingIndex()
    for i in range(5000):
        s.remember(f"later-{i}", 10 * HOUR + i, i % 12)
    s.remember("due", 1_000, 3)
    for p in range(12):
        s.see(p, 2_000, mono=0.0)
    s.due_index.reads = 0
    assert s.due(set(range(12)), now_ms=0, mono=0.0) == [("due", 2_000, 3)]
    assert s.due_index.reads <= 12
    s.due_index.reads = 0
    assert s.due(set(range(12)), now_ms=0, mono=0.0) == []
    assert s.due_index.reads == 0


def test_a_deadline_moved_or_dropped_is_not_handed_out_and_the_heaps_stay_bounded():
    s = sched(lateness=0)
    s.remember("a", 1_000, 0)
    s.remember("a", 50_000, 0)  # a contact moved its deadline later
    s.remember("b", 1_000, 0)
    s.remember("b", None, 0)  # nothing can fall due any more
    s.see(0, 2_000, mono=0.0)
    assert s.due({0}, now_ms=0, mono=0.0) == []
    for i in range(10_000):  # deadlines moved again and again: stale entries do not pile up
        s.remember("a", 100_000 + i, 0)
    assert len(s.heaps[0]) <= 2 * len(s.due_index) + 1024
    s.see(0, 200_000, mono=0.0)
    assert s.due({0}, now_ms=0, mono=0.0) == [("a", 200_000, 0)]


def test_the_timer_lets_a_waiting_batch_in_between_slices_of_the_customers_that_fell_due(monkeypatch):
    """Thousands of customers fall due at once when an idle partition's watermark jumps to the
    wall clock: the timer advances them a slice per hold of the stage's lock, so a batch waiting
    for the lock goes after one slice, not after all of them."""
    import asyncio

    import streams.conversations_stage as cs

    monkeypatch.setattr(cs, "TICK_SLICE", 10, raising=False)
    stage, table = _stage(StitchRules())
    t0 = 1_795_000_000_000
    for i in range(25):
        contact = chat_contact(f"c{i}", f"cust{i:02d}", t0)
        state, _ = stage.stitcher.apply(None, contact, wm=t0)
        state["p"] = 4
        table[f"cust{i:02d}"] = state
    advanced: list[int] = []  # customers advanced, per produce (one per hold of the lock)
    waited: list[int] = []  # customers advanced before the waiting batch got the lock

    async def batch() -> None:
        async with stage.lock:
            waited.append(sum(advanced))

    async def produce(out: Outputs) -> None:
        advanced.append(len({r[1] for r in out.records}))
        if len(advanced) == 1:
            tasks.append(asyncio.create_task(batch()))  # a batch arrives while the timer holds the lock
        out.records.clear()

    tasks: list = []
    stage.ctx.produce = produce

    async def run() -> int:
        stage.tick({4}, now_ms=0, mono=0.0, out=Outputs())  # indexed; nothing due yet
        stage.clocks.see(4, t0 + 10 * HOUR, mono=0.0)
        done = await stage.on_timer({4})
        await asyncio.gather(*tasks)
        return done

    done = asyncio.run(run())
    assert waited == [10]
    assert sum(advanced) == 25 and max(advanced) <= 10 and done == 25


class _RocksStore:
    """faust's RocksDB store on rocksdict as ``_states_of`` reads it: a database per partition."""

    use_rocksdict = True
    offset_key = b"__faust\x00offset__"

    def __init__(self, dbs: dict[int, dict[bytes, bytes]]):
        self.dbs, self.opened = dbs, []

    def _db_for_partition(self, partition: int) -> dict[bytes, bytes]:
        self.opened.append(partition)
        return self.dbs[partition]


_RocksStore.__module__ = "faust.stores.rocksdb"


def test_a_fresh_worker_indexes_its_partitions_one_per_hold_of_the_lock_reading_only_that_partitions_states():
    """A worker given partitions (a start, a rebalance) reads their customers' states to learn their
    deadlines: a partition at a time, each from its own database, with the stage's lock let go in
    between, not the whole table in one hold that stops every stage."""
    import asyncio

    import orjson

    stage, _ = _stage(StitchRules())
    dbs = {
        p: {
            orjson.dumps(f"cust{p}-{i}"): orjson.dumps({"pub": {}, "p": p, "deadline": 5_000 + i, "wm": 1_000})
            for i in range(3)
        }
        for p in range(3)
    }
    for db in dbs.values():
        db[_RocksStore.offset_key] = b"42"
    store = _RocksStore(dbs)
    stage.table = SimpleNamespace(data=store, items=lambda: [])

    class CountingLock(asyncio.Lock):
        holds = 0

        async def acquire(self):
            await super().acquire()
            CountingLock.holds += 1
            return True

    opened_in: list[tuple[int, int]] = []  # (partition opened, hold of the lock it was opened in)
    opened = store._db_for_partition

    def db_for_partition(p):
        assert stage.lock.locked()
        opened_in.append((p, CountingLock.holds))
        return opened(p)

    store._db_for_partition = db_for_partition

    async def run():
        stage.lock = CountingLock()
        await stage.on_timer({0, 1, 2})

    asyncio.run(run())
    assert [p for p, _ in opened_in] == [0, 1, 2]  # each partition's own database, once
    assert len({hold for _, hold in opened_in}) == 3  # one per hold of the lock
    assert stage.clocks.due_index == {f"cust{p}-{i}": (5_000 + i, p) for p in range(3) for i in range(3)}
    assert stage.clocks.watermark(1) == 1_000
