"""The conversations stage: contacts.resolved.v1 + the commands topic → conversations.v1, keyed by
customer_id (each customer's state has one writer, the owner of its partition).

A batch at a time: each customer's state is read once, every record of the batch applied to it in
order (``Stitcher``: the pure, event-time rules), written once, and the events of the difference
produced in order. SLA clocks are advanced inside the stage: a timer asks the pure
``ClockScheduler`` which customers are due and advances them here, under the same lock as the
batches, so a customer's state changes in one place, in order, with its changelog (a tick no
longer round-trips through the commands topic; a ``tick`` command still on the topic from an
earlier version is applied as before).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson

import schemas
from schemas.avro_writer import RunsWriter, Unsupported
from schemas.codec import Codec
from streams.clocks import ClockScheduler
from streams.conversations import Stitcher
from streams.identity import to_millis
from streams.identity_stage import RESOLVED_FIELDS, ContactReader
from streams.stage import DECODE_ERRORS, Outputs, StageContext, _is_rocksdict, log, read_table, write_table
from streams.topology import Topology
from threadline import metrics


# The conversation event's fields that the events of one change share (runs of the schema's fields):
# the conversation and its contact, the customer's facts, the conversation's snapshot after the change.
SHARED_RUNS = (
    ("customer_id", "conversation_id", "channel", "previous_channel", "contact_event_id", "waiting_on"),
    ("facts",),
    ("status", "opened_at", "messages", "breaches", "open_sla", "merged_into", "merged_into_customer_id"),
)

TICK_SLICE = 200  # due customers advanced per hold of the stage's lock (a batch waits for one slice at most)


class EventEncoder:
    """conversations.v1 values for the events of a change, each run of fields the events share
    (``SHARED_RUNS``: the facts, the snapshot) written once per change (``RunsWriter``: a run whose
    values are the previous event's objects reuses its bytes) instead of once per event; the frame header (magic byte and schema id, or fingerprint) is the codec's.

    The header is learnt once from the codec: the first event encoded by the codec, whose bytes
    must be a header followed by exactly the body this writer writes; with any other codec (one
    that writes something else) every event is the codec's. An event the writer does not take
    (``Fallback``: a value of another type, a missing field) is the codec's too, so its errors stay
    the codec's."""

    def __init__(self, codec: Codec, topic: str, subject: str = schemas.CONVERSATION_EVENT):
        self.codec, self.topic, self.subject = codec, topic, subject
        try:
            self.writer: RunsWriter | None = RunsWriter(schemas.latest(subject).parsed, SHARED_RUNS)
        except (Unsupported, KeyError, ValueError):
            self.writer = None
        self.header: bytes | None = None  # None: not learnt yet (or the codec's bytes are not header + body)

    def encode(self, events: list[dict]) -> list[bytes]:
        writer = self.writer
        if writer is None or not events:
            return [self.codec.encode(self.topic, self.subject, e) for e in events]
        header = self.header if self.header is not None else self._learn(events[0], writer)
        if header is None:
            return [self.codec.encode(self.topic, self.subject, e) for e in events]
        return [
            self.codec.encode(self.topic, self.subject, e) if body is None else header + body
            for e, body in zip(events, writer.write_all(events), strict=True)
        ]

    def _learn(self, event: dict, writer: RunsWriter) -> bytes | None:
        full = self.codec.encode(self.topic, self.subject, event)
        (body,) = writer.write_all([event])
        if body is None:
            return None  # learnt from another event
        if isinstance(full, bytes) and len(full) > len(body) and full.endswith(body):
            self.header = full[: len(full) - len(body)]
        else:
            self.writer = None  # this codec writes something else: its bytes, always
        return self.header


class ConversationsStage:
    def __init__(self, ctx: StageContext, codec: Codec, topo: Topology, stitcher: Stitcher, scheduler: ClockScheduler):
        self.ctx, self.codec, self.topo, self.stitcher, self.clocks = ctx, codec, topo, stitcher, scheduler
        self.names = topo.names
        assert topo.conv_table is not None, "the conversations stage needs its table"
        self.table = topo.conv_table
        self.lock = asyncio.Lock()
        self.sla_events = metrics.Labelled(metrics.SLA)
        self.encoder = EventEncoder(codec, self.names.conversations)
        # a resolved contact's fields the rules use, the rest not decoded (the full decode for
        # anything the projection does not read: its errors, its dead letters)
        self.reader = ContactReader(codec, RESOLVED_FIELDS)

    # -- one batch --------------------------------------------------------------------------

    def _step(
        self, event: Any, states: dict[str, dict | None], mono: float
    ) -> tuple[str, dict | None, dict | None, list[dict], str | None] | None:
        """One record: (customer, state before, state after, events, contact id), or None when it
        changes nothing. Raises DECODE_ERRORS for a record the rules cannot process."""
        msg = event.message
        cid = event.key.decode() if event.key else ""
        stitcher = self.stitcher

        def state_of(c: str) -> dict | None:
            return states[c] if c in states else read_table(self.table, c, msg.topic, msg.partition)

        if msg.topic == self.names.commands:
            cmd = json.loads(event.value)
            wm = self.clocks.see(msg.partition, None, mono)
            state = state_of(cid)
            if cmd["type"] == "moved":
                new, events = stitcher.remove(state, list(cmd["event_ids"]), cmd["to"], gen=int(cmd["gen"]), wm=wm)
                new["customer_id"] = cid
            elif cmd["type"] == "tick" and state is not None:  # written by an earlier version
                new, events = stitcher.advance(state, int(cmd["wm"]))
            else:  # "retire" of earlier versions: the moved contacts' commands do its work now
                return None
            return cid, state, new, events, None
        record = self.reader.read(event.value)[0]
        headers = dict(msg.headers or [])
        if not record.get("customer_id"):
            raise ValueError("a resolved contact without customer_id")
        cid = record["customer_id"]
        state = state_of(cid)
        wm = self.clocks.see(msg.partition, to_millis(record["occurred_at"]), mono)
        gen = int(headers.get("gen", b"0") or 0)
        new, events = stitcher.apply(state, record, wm=wm, gen=gen)
        return cid, state, new, events, record["event_id"]

    def _publish(
        self, out: Outputs, cid: str, events: list[dict], contact_id: str | None, partition: int, offset: int | None
    ) -> None:
        if not events:
            return
        key, topic, info = cid.encode(), self.names.conversations, log.info  # the logger bound once
        for e, value in zip(events, self.encoder.encode(events), strict=True):
            out.add(topic, key, value, {"event_id": e["event_id"]})
            if e["event_type"] in metrics.SLA_EVENTS:
                self.sla_events(metrics.SLA_EVENTS[e["event_type"]], e["channel"] or "other").inc()
            info(
                "conversation_" + e["event_type"],
                event_id=e["event_id"],
                customer_id=cid,
                contact_event_id=contact_id,
                version=e["version"],
                partition=partition,
                offset=offset,
            )

    def process(self, events: list, out: Outputs) -> None:
        """Apply a batch; each changed state written once, at the end, for its partition."""
        states: dict[str, dict | None] = {}
        changed: dict[str, int] = {}  # customer -> partition of its state
        mono = time.monotonic()
        for event in events:
            msg = event.message
            try:
                step = self._step(event, states, mono)
            except DECODE_ERRORS as exc:
                self.ctx.to_dlq(out, event, f"{type(exc).__name__}: {exc}")
                continue
            if step is None:
                continue
            cid, state, new, evs, contact_id = step
            if new is not state:
                new["p"] = msg.partition
                states[cid] = new
                changed[cid] = msg.partition
            self.clocks.remember(cid, self.stitcher.next_deadline(new), msg.partition)
            self._publish(out, cid, evs, contact_id, msg.partition, msg.offset)
        self._write(out, states, changed)

    def _write(self, out: Outputs, states: dict[str, dict | None], changed: dict[str, int]) -> None:
        by_partition: dict[int, dict[str, dict | None]] = {}
        for cid, p in changed.items():
            by_partition.setdefault(p, {})[cid] = states[cid]
        for p, items in sorted(by_partition.items()):
            write_table(out, self.table, items, self.names.resolved, p)

    async def agent(self, stream: faust.StreamT) -> None:
        async for events in self.ctx.batches(stream, "conversations"):
            out = Outputs()
            async with self.lock:
                self.process(events, out)
                await self.ctx.produce(out)

    # -- the clocks -------------------------------------------------------------------------

    def tick(self, active: set[int], now_ms: int, mono: float, out: Outputs) -> int:
        """Advance every due customer of the partitions in ``active`` to its partition's watermark,
        all at once; the number advanced (``on_timer`` does the same a slice at a time)."""
        due = self.due(active, now_ms, mono)
        self.advance(due, out, active)
        return len(due)

    def due(self, active: set[int], now_ms: int, mono: float) -> list[tuple[str, int, int]]:
        """The customers of ``active`` whose clocks fell due: (customer, watermark, partition)."""
        self.clocks.index(active, lambda: list(self.table.items()), self.stitcher.next_deadline)
        return self.clocks.due(active, now_ms, mono)

    def _states_of(self, partition: int) -> Iterable[tuple[str, dict]]:
        """The (customer, state) pairs of a partition of the table: on RocksDB its own database
        read directly (the others not read); on any other store every pair of the table."""
        store = getattr(self.table, "data", None)
        if store is None or not _is_rocksdict(store):
            yield from list(self.table.items())
            return
        skip = store.offset_key
        for kb, vb in store._db_for_partition(partition).items():
            if kb != skip:
                yield orjson.loads(kb), orjson.loads(vb)

    def advance(self, due: list[tuple[str, int, int]], out: Outputs, active: set[int]) -> int:
        """Advance these customers to their watermarks (those of a partition no longer in
        ``active`` are left to its new owner); the number advanced."""
        states: dict[str, dict | None] = {}
        changed: dict[str, int] = {}
        done = 0
        for cid, wm, partition in due:
            if partition not in active:  # given away since it fell due: handed out again if it comes back
                self.clocks.ticked.pop(cid, None)
                continue
            done += 1
            state = read_table(self.table, cid, self.names.resolved, partition)
            if state is None:
                continue
            new, events = self.stitcher.advance(state, wm)
            if new is not state:
                new["p"] = partition
                states[cid], changed[cid] = new, partition
            self.clocks.remember(cid, self.stitcher.next_deadline(new), partition)
            self._publish(out, cid, events, None, partition, None)
        self._write(out, states, changed)
        return done

    async def on_timer(self, owned: set[int] | Callable[[], set[int]]) -> int:
        """The clocks that fell due on the partitions this worker owns (``owned``: asked again for
        each slice when it is a function), advanced ``TICK_SLICE`` customers per hold of the lock, each slice's records
        produced before the lock is let go: a batch waits for one slice, not for every customer
        that fell due (thousands at once when a partition goes idle and its watermark jumps to the
        wall clock). The number advanced."""
        if not callable(owned):
            owned = (lambda fixed: lambda: fixed)(owned)
        async with self.lock:
            fresh = self.clocks.fresh(owned())
        for p in sorted(fresh):  # a partition assigned (a restart, a rebalance): its states read, one per hold
            async with self.lock:
                if p in owned():
                    self.clocks.index_partition(p, self._states_of(p), self.stitcher.next_deadline)
            await asyncio.sleep(0)
        async with self.lock:
            due = self.due(owned(), int(time.time() * 1000), time.monotonic())
        done = 0
        for i in range(0, len(due), TICK_SLICE):
            out = Outputs()
            async with self.lock:
                done += self.advance(due[i : i + TICK_SLICE], out, owned())
                await self.ctx.produce(out)
            await asyncio.sleep(0)  # the batches waiting for the lock go first
        return done
