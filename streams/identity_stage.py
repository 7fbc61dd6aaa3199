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
import itertools
import json
from typing import Any

import orjson

import schemas
from schemas.avro_reader import Unreadable, compile_projection
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec, plan_of
from streams.identity import Change, ContactRecord, GraphRecords, IdentityGraph, NodeRecord, resolve
from streams.identity_store import MemoryStore, TableStore
from streams.stage import DECODE_ERRORS, Letter, Outputs, StageContext, log
from streams.topology import StreamTopics


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# The fields of a contact the identity stage reads (``IdentityGraph.observe``, ``ResolvedValues``)
CONTACT_FIELDS = ("event_id", "occurred_at", "recorded_at", "identities", "facts", "customer_id", "sealed")
# What the route stage checks: that the contact decodes (its times in range) and has identities
ROUTE_FIELDS = ("identities", "occurred_at", "recorded_at", "sealed")
# What the conversations stage reads of a resolved contact (``streams.conversations.view``, the
# customer, the clock's event time)
RESOLVED_FIELDS = (
    "event_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "channel",
    "direction",
    "actor",
    "language",
    "thread",
    "facts",
    "provider_id",
    "metadata",
    "customer_id",
    "sealed",
)
# Epoch millis a datetime holds (years 1 to 9999): outside them the codec's decode fails
_FIRST_MS, _LAST_MS = -62_135_596_800_000, 253_402_300_799_999


class ContactReader:
    """The fields of a contact a stage uses (``fields``, every one with ``occurred_at``,
    ``recorded_at`` and ``sealed``; the identity stage's: ``CONTACT_FIELDS``), read from
    its bytes without decoding the rest (``schemas.avro_reader.compile_projection``: the text,
    attachments, thread, consent and metadata are skipped), its times the millisecond longs
    themselves (what ``streams.identity.to_millis`` makes of the decoded datetimes).

    ``read`` gives ``(record, complete)``: the projection (complete False) when the frame's writer
    schema is read directly (the reader's own layout) and the projection reads the body whole;
    otherwise the codec's full decode (complete True: an older writer schema, another record, a
    sealed contact, a time outside the datetime range or not after the epoch, a body the projection
    cannot read — whose ``DecodeError`` is then the codec's own). Decided once per frame header of
    a schema the codec knows (a header it does not know is not kept: garbage does not grow it)."""

    def __init__(self, codec: Codec, fields: tuple[str, ...] = CONTACT_FIELDS):
        assert {"occurred_at", "recorded_at", "sealed"} <= set(fields), "the checks need them"
        self.codec, self.fields = codec, fields
        self.fullname = schemas.latest(schemas.CONTACT).fullname
        self.readers: dict[bytes, tuple[int, Any] | None] = {}  # frame header -> (its length, projection)

    def _reader(self, raw: bytes, head: bytes) -> tuple[int, Any] | None:
        found = plan_of(self.codec, raw)
        if found is None:  # not a frame of a schema the codec knows: nothing kept
            return None
        n, plan = found
        project = None
        if plan.direct and plan.fullname == self.fullname:
            project = compile_projection(plan.schema, self.fields)
        hit = self.readers[head] = None if project is None else (n, project)
        return hit

    def read(self, raw: bytes) -> tuple[dict, bool]:
        head = raw[:10] if raw[:2] == SINGLE_OBJECT_MAGIC else raw[:5]
        try:
            hit = self.readers[head]
        except KeyError:
            hit = self._reader(raw, head)
        if hit is not None:
            try:
                record = hit[1](raw, hit[0])
            except Unreadable:
                pass
            else:
                occurred, recorded = record["occurred_at"], record["recorded_at"]
                if record["sealed"] is None and 0 < occurred <= _LAST_MS and 0 < recorded <= _LAST_MS:
                    return record, False  # times >= 1: as truthy as the datetimes
        return self.codec.decode(raw).record, True


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
    _AFTER_NULLS = b"\x00" * len(AFTER)
    _ENDS = b"\x00" + _AFTER_NULLS  # a contact without a customer id and the fields after it

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

    def value(self, raw: bytes, record: dict, customer_id: str, complete: bool = True) -> bytes:
        """``raw`` with ``customer_id`` set; ``record``: its decoded fields (only
        ``ContactReader``'s when not ``complete``: the whole record is then decoded when needed)."""
        n = self._header_length(raw)
        after = self._AFTER_NULLS
        if (
            n
            and record.get("customer_id") is None
            and all(record.get(f) is None for f in self.AFTER)
            and raw.endswith(self._ENDS)
        ):
            head = raw[:n]
            cut = len(raw) - 1 - len(after)
            if head not in self.patchable:
                if not complete:
                    record = self.codec.decode(raw).record
                full = self.codec.encode(self.topic, schemas.CONTACT, resolve(record, customer_id))
                out_head = full[: self._header_length(full)]
                same = out_head and full == out_head + raw[n:cut] + self._tail(customer_id) + after
                self.patchable[head] = out_head if same else None
                return full
            out_head = self.patchable[head]
            if out_head is not None:
                return out_head + raw[n:cut] + self._tail(customer_id) + after
        if not complete:
            record = self.codec.decode(raw).record
        return self.codec.encode(self.topic, schemas.CONTACT, resolve(record, customer_id))


def contact_bytes(stored: bytes) -> bytes:
    """A contact's bytes from a record of the contacts' table: the bytes themselves, or, as older
    changelogs and stores hold them, a JSON string of their base64 (a framed contact, Confluent's
    or the single-object one, never begins with ``"``)."""
    return base64.b64decode(orjson.loads(stored)) if stored[:1] == b'"' else stored


class StateTable:
    """The identity stage's table of the contacts' bytes (event id -> the contact's bytes, as the
    graph topic gave them), kept in a local store (``streams.identity_store``: RocksDB on disk in a
    worker, or memory) with a bounded cache in front (``values``: at most ``limit`` of them are kept
    after a batch, the least recently written dropped first). A read the cache misses goes to the
    store. What a batch changed is kept in ``dirty`` until the runner (``streams.identity_runner``)
    writes it, once per batch, to the table's changelog topic (``changelog_items``: the key's JSON,
    the bytes themselves as the value) and, once acknowledged, to the store (``persist``) with the
    changelog offset it brings the store to. Records of the older form, the bytes' base64 in a JSON
    string, are read as well (``contact_bytes``). The graph's table is a ``GraphTable``: the same
    life, its values held as parsed records."""

    LIMIT = 100_000  # values kept between batches at most (the graph's)

    def __init__(self, topic: str, store: TableStore | None = None, limit: int = LIMIT):
        self.topic = topic
        self.store: TableStore = store if store is not None else MemoryStore()
        self.limit = limit
        self.values: dict = {}
        self.dirty: dict = {}

    def get(self, key, default=None):
        value = self.values.get(key)
        if value is None:
            raw = self.store.get(orjson.dumps(key))
            if raw is None:
                return default
            value = self.values[key] = contact_bytes(raw)
        return value

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        values = self.values
        values.pop(key, None)  # to the end: the last written are the last dropped
        values[key] = value
        self.dirty[key] = value

    def __len__(self) -> int:
        return len(self.store)

    def take_dirty(self) -> dict:
        dirty, self.dirty = self.dirty, {}
        return dirty

    def changelog_items(self) -> list[tuple[bytes, bytes]]:
        """What changed since the last call, as changelog records: (the key's JSON, the bytes)."""
        dumps = orjson.dumps
        return [(dumps(key), value) for key, value in self.take_dirty().items()]

    def persist(self, items: list[tuple[bytes, bytes | None]], offset: int, writer: bytes) -> None:
        """A batch's changelog records (acknowledged, up to ``offset``) written to the store, in
        one write with that offset and ``writer``; the cache trimmed to its limit."""
        self.store.write(items, offset, writer, verified=False)
        self.trim()

    def trim(self) -> None:
        values = self.values
        over = len(values) - self.limit
        if over > 0:
            for key in list(itertools.islice(values, over)):
                del values[key]

    def snapshot(self) -> dict:
        """Every record of the table (key -> the contact's bytes), read from its store."""
        return {orjson.loads(k): contact_bytes(v) for k, v in self.store.items()}

    def clear(self) -> None:
        """The cache dropped (the store is what the table holds)."""
        self.values.clear()
        self.dirty.clear()


class GraphTable(GraphRecords):
    """The identity graph's table as parsed records (``GraphRecords``: ``e:<event id>`` a
    ``ContactRecord``, ``n:<node key>`` a ``NodeRecord``) over a local store of their JSON (the
    ``StateTable``'s: RocksDB in a worker, or memory). A record not held is read from the store and
    parsed once (absences held too); past ``limit`` records held after a batch, they are dropped
    (``GraphRecords.forget``) and read again as needed.

    The graph reads and writes records and never JSON. What a batch changed stays marked until the
    runner takes it (``take_dirty``): each changed record's JSON, made once per batch, for the
    table's changelog topic and then the store (``persist``). Recovery writes the store; the
    records held are dropped when the partition is assigned or revoked (``clear``)."""

    CUSTOMER_IDS_KEPT = 100_000  # event id -> customer id answers kept between batches at most
    LIMIT = 200_000  # records held between batches at most

    def __init__(self, topic: str, store: TableStore | None = None, limit: int = LIMIT):
        super().__init__(None, limit)
        self.topic = topic
        self.store: TableStore = store if store is not None else MemoryStore()

    def _load(self, key: str):
        raw = self.store.get(orjson.dumps(key))
        return None if raw is None else orjson.loads(raw)

    def flush(self) -> None:
        """The graph's writes stay held (and marked) until ``take_dirty``."""

    def take_dirty(self) -> dict:
        if len(self.customer_ids) > self.CUSTOMER_IDS_KEPT:
            self.customer_ids = {}
        return self.take_changed()

    def changelog_items(self) -> list[tuple[bytes, bytes]]:
        """Each record changed since the last call, as a changelog record: (key, value) as JSON."""
        dumps = orjson.dumps
        return [(dumps(key), dumps(value)) for key, value in self.take_dirty().items()]

    def persist(self, items: list[tuple[bytes, bytes | None]], offset: int, writer: bytes) -> None:
        """As ``StateTable.persist``: the batch's changelog records to the store with ``offset``."""
        self.store.write(items, offset, writer, verified=False)
        self.trim()

    def trim(self) -> None:
        if len(self.contacts) + len(self.nodes) > self.limit:
            self.forget()

    def snapshot(self) -> dict:
        """Every record of the table's store (stored key -> JSON value)."""
        return {orjson.loads(k): orjson.loads(v) for k, v in self.store.items()}

    def records(self) -> dict:
        """Every record of the table, by stored key: its store's, parsed, and those held."""
        out = {}
        for key, value in self.snapshot().items():
            if isinstance(key, str) and key[:2] in ("e:", "n:"):
                out[key] = (ContactRecord if key[0] == "e" else NodeRecord).from_json(value)
        out.update({"e:" + k: ContactRecord._make(r) for k, r in self.contacts.items() if r is not None})
        out.update({"n:" + k: NodeRecord._make(r) for k, r in self.nodes.items() if r is not None})
        return out

    def __len__(self) -> int:
        """The records of its store."""
        return len(self.store)

    def clear(self) -> None:
        """The records held dropped (the store is what the table holds)."""
        self.contacts, self.nodes, self.changed, self.customer_ids = {}, {}, {}, {}


def unlink_command(a: str, b: str, *, command_id: str, at_ms: int) -> bytes:
    """The record ``threadline identity unlink`` writes to the graph topic (header kind=unlink)."""
    return json.dumps({"a": a, "b": b, "command_id": command_id, "at_ms": at_ms}).encode()


class IdentityStage:
    """The stage's rules over a batch of graph topic records (aiokafka's ``ConsumerRecord``:
    ``topic``, ``partition``, ``offset``, ``headers``, ``value``): the graph works on its
    ``GraphTable``, the contacts' bytes are kept in ``contacts``; ``process`` adds the batch's
    outputs to ``out`` and leaves each changed key of both tables marked for ``take_dirty``."""

    def __init__(
        self, ctx: StageContext, codec: Codec, names: StreamTopics, graph: IdentityGraph, contacts: StateTable
    ):
        assert isinstance(graph.store, GraphTable), "the identity stage writes the graph through a GraphTable"
        self.ctx, self.codec, self.names, self.graph, self.contacts = ctx, codec, names, graph, contacts
        self.resolved = ResolvedValues(codec, names.resolved)
        self.reader = ContactReader(codec)

    def send_resolved(
        self, out: Outputs, value: bytes, customer_id: str, event_id: str, gen: int, rekeyed_from: str | None = None
    ) -> None:
        headers = {"event_id": event_id, "gen": str(gen), "customer_id": customer_id}
        if rekeyed_from:
            headers["rekeyed_from"] = rekeyed_from
        out.add(self.names.resolved, customer_id.encode(), value, headers)

    def publish(self, out: Outputs, change: Change, offset: int, pending: dict[str, bytes]) -> None:
        """identities.v1 events; every contact whose customer changed goes again to
        contacts.resolved.v1 under its new customer, and its old customer gets one ``moved`` command
        (per new customer) naming the contacts that left, both at graph position ``offset``."""
        names, codec = self.names, self.codec
        moved: dict[tuple[str, str], list[str]] = {}
        for eid, new, old in change.rekeyed:
            raw = pending.get(eid)
            if raw is None:
                raw = self.contacts.get(eid)
            if raw is not None:
                record = codec.decode(raw).record
                self.send_resolved(out, self.resolved.value(raw, record, new), new, eid, offset, rekeyed_from=old)
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

    def process(self, records: list, out: Outputs) -> None:
        graph, read, resolved = self.graph, self.reader.read, self.resolved
        pending: dict[str, bytes] = {}  # the batch's new contacts (event id -> bytes), written at its end
        with graph.batch():
            for msg in records:
                value = msg.value
                headers = dict(msg.headers or ())
                if headers.get("kind") == b"unlink":
                    try:
                        cmd = json.loads(value)
                        change = graph.unlink(
                            cmd["a"], cmd["b"], command_id=cmd["command_id"], at_ms=int(cmd["at_ms"]), gen=msg.offset
                        )
                    except (ValueError, KeyError, TypeError) as exc:
                        self.ctx.to_dlq(out, Letter(msg, value), f"{type(exc).__name__}: {exc}")
                        continue
                    self.publish(out, change, msg.offset, pending)
                    continue
                try:
                    if value is None:
                        raise ValueError("a graph record without a value")
                    record, complete = read(value)
                    change = graph.observe(record, gen=msg.offset)
                    out_value = resolved.value(value, record, change.customer_id, complete)
                except DECODE_ERRORS as exc:
                    self.ctx.to_dlq(out, Letter(msg, value), f"{type(exc).__name__}: {exc}")
                    continue
                eid = record["event_id"]
                if not change.duplicate:
                    pending[eid] = value
                self.publish(out, change, msg.offset, pending)
                self.send_resolved(out, out_value, change.customer_id, eid, msg.offset)
                log.info(
                    "contact_resolved",
                    event_id=eid,
                    customer_id=change.customer_id,
                    offset=msg.offset,
                    duplicate=change.duplicate,
                )
        contacts = self.contacts
        for eid, raw in pending.items():
            contacts[eid] = raw
