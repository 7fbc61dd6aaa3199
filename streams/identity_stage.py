"""The identity stage: the graph's single writer (the worker that owns the one partition of the
graph topic; see ``streams.identity`` for why one).

A batch at a time: each contact is decoded once and observed by the graph (``IdentityGraph.batch``:
every changed graph record is written once per batch); its bytes are forwarded to
contacts.resolved.v1 with the customer id set (``ResolvedValues``: the record's last field is
patched in place, no re-encoding) and in a ``customer_id`` header; identities.v1 gets the graph's
events. A contact re-keyed by a merge or an unmerge goes again to contacts.resolved.v1 under its
new customer with the graph position (header ``gen``), and its old customer gets a ``moved``
command at that position on the commands topic, so both are recomputed from their new sets of
contacts whatever the order the two records arrive in.
"""

from __future__ import annotations

import base64
import json

import faust

import schemas
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec
from streams.identity import Change, GraphRecords, IdentityGraph, resolve
from streams.stage import DECODE_ERRORS, Outputs, StageContext, log, read_table, write_table
from streams.topology import Topology


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ResolvedValues:
    """contacts.resolved.v1 values from contacts.v1 bytes without decoding and re-encoding.

    ``customer_id`` is a union of null (index 0) and string near the end of the contact schema,
    followed only by unions that are null in a contact written without them (``AFTER``: v2's
    ``sealed``, set only where privacy seals the contact): a contact without a customer id ends
    with one byte 0 for it and one per field after it, and the same contact with one has, in
    place of its 0, the index 1 (zigzag: 2), the string's length and its bytes. So when the writer
    schema of the input is the one this codec writes for contacts.resolved.v1, the output is that
    topic's frame header + the input's body with that byte replaced by the customer id. Whether
    it is, is checked once per input frame header by encoding one record the long way and
    comparing the bytes; any other writer schema (an older version) and a sealed contact are
    encoded the long way."""

    AFTER = ("sealed",)  # the contact schema's fields after customer_id, each null when absent

    def __init__(self, codec: Codec, topic: str):
        self.codec, self.topic = codec, topic
        self.patchable: dict[bytes, bytes | None] = {}  # input frame header -> output header, or None

    @staticmethod
    def _header_length(raw: bytes) -> int:
        if raw[:2] == SINGLE_OBJECT_MAGIC:
            return 10
        return 5 if raw[:1] == b"\x00" else 0

    @staticmethod
    def _tail(customer_id: str) -> bytes:
        cid = customer_id.encode()
        return b"\x02" + _varint(len(cid) << 1) + cid

    def value(self, raw: bytes, record: dict, customer_id: str) -> bytes:
        n = self._header_length(raw)
        after = b"\x00" * len(self.AFTER)
        if (
            n
            and record.get("customer_id") is None
            and all(record.get(f) is None for f in self.AFTER)
            and raw.endswith(b"\x00" + after)
        ):
            head = raw[:n]
            cut = len(raw) - 1 - len(after)
            if head not in self.patchable:
                full = self.codec.encode(self.topic, schemas.CONTACT, resolve(record, customer_id))
                out_head = full[: self._header_length(full)]
                same = out_head and full == out_head + raw[n:cut] + self._tail(customer_id) + after
                self.patchable[head] = out_head if same else None
                return full
            out_head = self.patchable[head]
            if out_head is not None:
                return out_head + raw[n:cut] + self._tail(customer_id) + after
        return self.codec.encode(self.topic, schemas.CONTACT, resolve(record, customer_id))


class GraphCache(GraphRecords):
    """The identity graph's table behind a cache of its records, parsed (``GraphRecords``),
    absences included.

    The identity stage is the one writer of the graph's one partition, so what it read or wrote
    stays true until the partition leaves this worker: the cache is dropped whenever the consumer
    group's generation changes (a rebalance, which may have moved the partition away and back)
    and when it holds ``limit`` records. A record is parsed once when it is read and kept parsed;
    the graph's writes stay records, kept (changed) until the stage takes their JSON
    (``take_dirty``) and writes it to the table, once per batch (``streams.stage.write_table``:
    store and changelog). ``get`` and ``__setitem__`` take and give the records' JSON."""

    def __init__(self, table, generation, limit: int = 500_000, topic: str = ""):
        super().__init__(None, limit)
        self.table, self.generation, self.topic = table, generation, topic
        self.seen_generation = None

    def _load(self, key: str):
        return read_table(self.table, key, self.topic, 0)  # the graph's one partition

    def flush(self) -> None:
        """The graph's writes stay here until ``take_dirty``."""

    def take_dirty(self) -> dict:
        return self.take_changed()

    def check(self) -> None:
        """Call at the start of every batch."""
        gen = self.generation()
        if gen != self.seen_generation or len(self.contacts) + len(self.nodes) > self.limit:
            self.forget()
            self.seen_generation = gen

    def get(self, key, default=None):
        value = self.value(key)
        return default if value is None else value

    def __getitem__(self, key):
        value = self.value(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        self.put_value(key, value)


def unlink_command(a: str, b: str, *, command_id: str, at_ms: int) -> bytes:
    """The record ``threadline identity unlink`` writes to the graph topic (header kind=unlink)."""
    return json.dumps({"a": a, "b": b, "command_id": command_id, "at_ms": at_ms}).encode()


def identity_stage(ctx: StageContext, codec: Codec, topo: Topology, graph: IdentityGraph):
    """The stage's agent; ``graph`` works on a ``GraphCache`` of the graph table."""
    names = topo.names
    cache = graph.store
    assert isinstance(cache, GraphCache), "the identity stage writes the graph through its GraphCache"
    contacts_table = topo.contacts_table
    assert contacts_table is not None, "the identity stage needs its tables"
    resolved = ResolvedValues(codec, names.resolved)

    def send_resolved(
        out: Outputs, value: bytes, customer_id: str, event_id: str, gen: int, rekeyed_from: str | None = None
    ) -> None:
        headers = {"event_id": event_id, "gen": str(gen), "customer_id": customer_id}
        if rekeyed_from:
            headers["rekeyed_from"] = rekeyed_from
        out.add(names.resolved, customer_id.encode(), value, headers)

    def publish(out: Outputs, change: Change, offset: int, pending: dict[str, bytes]) -> None:
        """identities.v1 events; every contact whose customer changed goes again to
        contacts.resolved.v1 under its new customer, and its old customer gets one ``moved`` command
        (per new customer) naming the contacts that left, both at graph position ``offset``."""
        moved: dict[tuple[str, str], list[str]] = {}
        for eid, new, old in change.rekeyed:
            raw = pending.get(eid)
            if raw is None:
                stored = contacts_table.get(eid)
                raw = base64.b64decode(stored) if stored is not None else None
            if raw is not None:
                record = codec.decode(raw).record
                send_resolved(out, resolved.value(raw, record, new), new, eid, offset, rekeyed_from=old)
            moved.setdefault((old, new), []).append(eid)
        for (old, new), ids in sorted(moved.items()):
            out.add(
                names.commands,
                old.encode(),
                json.dumps({"type": "moved", "to": new, "event_ids": sorted(ids), "gen": offset}).encode(),
            )
        for e in change.events:
            out.add(
                names.identities,
                e["customer_id"].encode(),
                codec.encode(names.identities, schemas.IDENTITY_EVENT, e),
                {"event_id": e["event_id"]},
            )
            log.info(
                "identity_" + e["event_type"],
                event_id=e["event_id"],
                customer_id=e["customer_id"],
                offset=offset,
                rule=e["rule"],
                reason=e["reason"],
            )

    def process(events: list, out: Outputs) -> None:
        pending: dict[str, bytes] = {}  # the batch's new contacts (event id -> bytes), written at its end
        with graph.batch():
            for event in events:
                msg = event.message
                headers = dict(msg.headers or [])
                if headers.get("kind") == b"unlink":
                    try:
                        cmd = json.loads(event.value)
                        change = graph.unlink(
                            cmd["a"], cmd["b"], command_id=cmd["command_id"], at_ms=int(cmd["at_ms"]), gen=msg.offset
                        )
                    except (ValueError, KeyError, TypeError) as exc:
                        ctx.to_dlq(out, event, f"{type(exc).__name__}: {exc}")
                        continue
                    publish(out, change, msg.offset, pending)
                    continue
                try:
                    record = codec.decode(event.value).record
                    change = graph.observe(record, gen=msg.offset)
                    value = resolved.value(event.value, record, change.customer_id)
                except DECODE_ERRORS as exc:
                    ctx.to_dlq(out, event, f"{type(exc).__name__}: {exc}")
                    continue
                eid = record["event_id"]
                if not change.duplicate:
                    pending[eid] = event.value
                publish(out, change, msg.offset, pending)
                send_resolved(out, value, change.customer_id, eid, msg.offset)
                log.info(
                    "contact_resolved",
                    event_id=eid,
                    customer_id=change.customer_id,
                    offset=msg.offset,
                    duplicate=change.duplicate,
                )
        write_table(out, cache.table, cache.take_dirty(), names.graph, 0)
        write_table(
            out, contacts_table, {eid: base64.b64encode(raw).decode() for eid, raw in pending.items()}, names.graph, 0
        )

    async def identity(stream: faust.StreamT) -> None:
        async for events in ctx.batches(stream, "identity"):
            cache.check()
            out = Outputs()
            process(events, out)
            await ctx.produce(out)

    return identity
