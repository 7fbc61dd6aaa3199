"""The contacts projection: contacts.resolved.v1 → ``skeleton.contacts``, one row per resolved
contact, served by ``/contacts`` and ``/customers/{id}/contacts``. It runs on the projector
engine (``projectors/engine/runner.py``) like the read models: rows and tracking rows in one
transaction, self-assigned partitions, one writer per name, dead letters through
``threadline.dlq``. The table is made by the migrations (``0001_foundation.sql``) and is never
rebuilt or swapped. Text is made storable (NUL and unpaired surrogates become U+FFFD); duplicates
collapse on event_id, and of a contact's resolutions (a merge or an unmerge re-keys it) the row
holds the latest, by the identity graph's position (``projectors.rows.supersedes``), whatever
order they are read in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from projectors.engine.runner import DEFAULT_BATCH, Projector, Sources
from projectors.rows import resolution_gen, storable
from schemas.codec import Codec
from threadline.catalog import CONTACTS_RESOLVED
from threadline.errors import DecodeError
from threadline.settings import Settings

NAME = "skeleton.contacts"  # its tracking rows and metrics (projector:skeleton.contacts), as before
TABLE = "skeleton.contacts"
COLUMNS = (
    "event_id",
    "customer_id",
    "connector",
    "channel",
    "direction",
    "occurred_at",
    "recorded_at",
    "text",
    "record",
    "source_topic",
    "source_partition",
    "source_offset",
    "resolved_gen",
)


def _json_default(v):
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def to_row(record: dict, topic: str, partition: int, offset: int, gen: int = 0) -> tuple:
    """The row of one resolved contact (pure); ``gen``: its ``projectors.rows.resolution_gen``."""
    if not record.get("customer_id"):
        raise DecodeError("contact on contacts.resolved.v1 without customer_id")
    record = storable(record)  # NUL and unpaired surrogates: U+FFFD, the rest as it is
    return (
        record["event_id"],
        record["customer_id"],
        record["connector"],
        record["channel"],
        record["direction"],
        record["occurred_at"],
        record["recorded_at"],
        record.get("text"),
        json.dumps(record, default=_json_default),
        topic,
        partition,
        offset,
        gen,
    )


@dataclass
class Rows:
    rows: list[tuple] = field(default_factory=list)
    skipped_as_of: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def extend(self, other: Rows) -> None:
        self.rows.extend(other.rows)


class Contacts:
    """The engine's Projection of ``skeleton.contacts``."""

    target = TABLE
    outbox = None

    def __init__(self, name: str = NAME):
        self.name = name

    def prepare(self, conn: psycopg.Connection) -> None:
        """Nothing: the migrations made the table."""

    def current_build(self, conn: psycopg.Connection) -> None:
        return None

    def hold_build(self, cur: psycopg.Cursor) -> None:
        return None

    def new_batch(self) -> Rows:
        return Rows()

    def shape(self, batch: Rows, decoded, message) -> None:
        gen = resolution_gen(message.headers)
        batch.rows.append(to_row(decoded.record, message.topic, message.partition, message.offset, gen))

    def write(self, cur, batch: Rows) -> None:
        if batch.rows:
            cur.executemany(
                f"insert into {TABLE} ({', '.join(COLUMNS)}) values (%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s,%s)"
                " on conflict (event_id) do update set customer_id = excluded.customer_id, record = excluded.record,"
                " resolved_gen = excluded.resolved_gen, source_topic = excluded.source_topic,"
                " source_partition = excluded.source_partition, source_offset = excluded.source_offset"
                f" where ({TABLE}.resolved_gen, {TABLE}.customer_id) < (excluded.resolved_gen, excluded.customer_id)",
                batch.rows,
            )


def contacts_projector(
    settings: Settings,
    *,
    name: str = NAME,
    topic: str = CONTACTS_RESOLVED.name,
    codec: Codec | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Projector:
    """A projector of ``topic`` (resolved contacts) into skeleton.contacts, tracked as ``name``."""
    return Projector(settings, Contacts(name), sources=Sources(topic, None, None), codec=codec, batch_size=batch_size)
