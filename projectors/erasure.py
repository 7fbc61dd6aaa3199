"""Erasure and right of access over the read models (docs/privacy.md).

``component`` finds, from the live support projection, every customer an identity belongs to
(origins and survivors of merges), their identities, facts, contacts and conversations. ``erase``
destroys the data keys of all of them (every generation), drops their rows from every projection
schema (every table with a customer, conversation or contact column), tombstones their keys on
the compacted topics and changelogs, and emits one ``erased`` event (ids and counts only).
``access_bundle`` gathers what is held about the customer as one JSON document.

Pure parts (``tombstones``, ``erased_event``, ``bundle``) take plain data; the functions with a
connection or a producer are the I/O edge.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

import schemas
from schemas.privacy import SEALED_KEY_HEADER, Subject, fact_subject, mentions, open_payload
from threadline import catalog
from threadline.logging import get_logger

log = get_logger("threadline.privacy")

CUSTOMER_COLUMNS = ("origin_customer_id", "customer_id", "survivor_id", "root_id", "merged_into_customer_id")
CONVERSATION_COLUMNS = ("conversation_id",)
CONTACT_COLUMNS = ("event_id", "contact_event_id", "source_event_id")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "privacy", "pg_toast")
# the DLQs whose records are sealed with privacy on (docs/privacy.md, "Dead letters")
SEALED_DLQS = (catalog.INGEST_DLQ.name, catalog.STREAMS_DLQ.name, catalog.PROJECTIONS_DLQ.name)


def sealed_dlqs(topic_prefix: str = "") -> tuple[str, ...]:
    """The sealed DLQs erasure reads: the worker's under ``<prefix>.`` as its other topics."""
    streams = f"{topic_prefix}.{catalog.STREAMS_DLQ.name}" if topic_prefix else catalog.STREAMS_DLQ.name
    return tuple(streams if name == catalog.STREAMS_DLQ.name else name for name in SEALED_DLQS)


class NotFound(LookupError):
    """No customer holds the identity in the read model."""


@dataclass(frozen=True)
class Component:
    """One customer as the read model knows it: every id it had, and what it holds."""

    customer_ids: tuple[str, ...]
    identities: tuple[Subject, ...]
    facts: tuple[Subject, ...]
    event_ids: tuple[str, ...]
    conversation_ids: tuple[str, ...]


def component(conn: psycopg.Connection, schema: str, subject: Subject, token: str | None = None) -> Component:
    """The customer holding ``subject`` in the projection ``schema``; NotFound when none does."""
    values = [subject.value] + ([token] if token else [])
    origins = [
        r[0]
        for r in conn.execute(
            f"select distinct origin_customer_id from {schema}.customer_identities"
            " where kind = %s and platform = %s and lower(value) = any(%s)",
            (subject.kind, subject.platform or "", [v.lower() for v in values]),
        ).fetchall()
    ]
    if not origins:
        raise NotFound(f"no customer holds that {subject.kind} identity")
    current = [
        r[0]
        for r in conn.execute(
            f"select distinct customer_id from {schema}.customers where origin_customer_id = any(%s)", (origins,)
        ).fetchall()
    ]
    ids = sorted(
        set(origins)
        | set(current)
        | {
            r[0]
            for r in conn.execute(
                f"select origin_customer_id from {schema}.customers where customer_id = any(%s)", (current,)
            ).fetchall()
        }
    )
    identities = sorted(
        {
            Subject(k, v, p or None)
            for k, p, v in conn.execute(
                f"select kind, platform, value from {schema}.customer_identities where origin_customer_id = any(%s)",
                (ids,),
            ).fetchall()
        }
        | {subject},
        key=lambda s: s.label,
    )
    facts = sorted(
        {
            fact_subject({"kind": k, "value": v})
            for k, v in conn.execute(
                f"select f->>'kind', f->>'value' from {schema}.contacts c, jsonb_array_elements(c.facts) f"
                " where c.origin_customer_id = any(%s)",
                (ids,),
            ).fetchall()
            if k and v
        },
        key=lambda s: s.label,
    )
    events = sorted(
        r[0]
        for r in conn.execute(
            f"select event_id::text from {schema}.contacts where origin_customer_id = any(%s)", (ids,)
        ).fetchall()
    )
    conversations = sorted(
        r[0]
        for r in conn.execute(
            f"select conversation_id from {schema}.conversations where origin_customer_id = any(%s)", (ids,)
        ).fetchall()
    )
    return Component(tuple(ids), tuple(identities), tuple(facts), tuple(events), tuple(conversations))


def _tables(conn: psycopg.Connection) -> list[tuple[str, str, list[str]]]:
    rows = conn.execute(
        "select c.table_schema, c.table_name, array_agg(c.column_name::text) from information_schema.columns c"
        " join information_schema.tables t using (table_schema, table_name)"
        " where t.table_type = 'BASE TABLE' and c.table_schema <> all(%s) and c.table_schema not like 'pg_%%'"
        " group by c.table_schema, c.table_name order by 1, 2",
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return [(s, t, list(cols)) for s, t, cols in rows]


def purge(conn: psycopg.Connection, comp: Component) -> dict[str, int]:
    """Delete the component's rows from every table of every schema: ``schema.table`` → rows."""
    groups = (
        (CUSTOMER_COLUMNS, list(comp.customer_ids)),
        (CONVERSATION_COLUMNS, list(comp.conversation_ids)),
        (CONTACT_COLUMNS, list(comp.event_ids)),
    )
    deleted: dict[str, int] = {}
    with conn.transaction():
        for schema, table, columns in _tables(conn):
            where = [f"{col}::text = any(%s)" for names, ids in groups for col in names if col in columns and ids]
            params = [ids for names, ids in groups for col in names if col in columns and ids]
            if not where:
                continue
            n = conn.execute(f'delete from "{schema}"."{table}" where ' + " or ".join(where), params).rowcount
            if n:
                deleted[f"{schema}.{table}"] = n
    for name in deleted:  # old row versions go too (VACUUM; WAL and backups: docs/privacy.md)
        schema, table = name.split(".", 1)
        conn.execute(f'vacuum "{schema}"."{table}"')
    return deleted


def tombstones(comp: Component, identity_labels: Iterable[str], topic_prefix: str = "") -> list[tuple[str, bytes]]:
    """(topic, key) of every compacted record the component may have (pure): its profile, its
    conversation state, its identity graph nodes (``kind:[platform:]<pseudonym>``) and evidence,
    its re-keyed contacts. ``topic_prefix``: the stream topics' changelogs under ``<prefix>.`` (as the worker's)."""

    def t(spec) -> str:
        return f"{topic_prefix}.{spec.name}" if topic_prefix else spec.name

    out: list[tuple[str, bytes]] = []
    for cid in comp.customer_ids:
        out.append((catalog.CUSTOMER_PROFILES.name, cid.encode()))  # the projectors' topic: never prefixed
        out.append((t(catalog.CONVERSATIONS_CHANGELOG), json.dumps(cid).encode()))
    for label in sorted(identity_labels):
        out.append((t(catalog.IDENTITY_GRAPH_CHANGELOG), json.dumps(f"n:{label}").encode()))
    for eid in comp.event_ids:
        out.append((t(catalog.IDENTITY_GRAPH_CHANGELOG), json.dumps(f"e:{eid}").encode()))
        out.append((t(catalog.IDENTITY_CONTACTS_CHANGELOG), json.dumps(eid).encode()))
    return out


def erased_event(
    comp: Component,
    *,
    keys_destroyed: int,
    rows: int,
    tombstones: int,
    at: datetime,
    requested_by: str,
    event_id: str | None = None,
) -> dict:
    """The ``erased`` event (schemas/avro/erasure): ids and counts, no personal data (pure)."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "erased",
        "occurred_at": at,
        "customer_ids": list(comp.customer_ids),
        "identities": len(comp.identities),
        "facts": len(comp.facts),
        "keys_destroyed": keys_destroyed,
        "read_model_rows": rows,
        "tombstones": tombstones,
        "requested_by": requested_by,
    }


def dead_letters_of(
    comp: Component,
    ring,
    letters: Iterable[tuple[bytes, str]],
    tokens: Iterable[str] = (),
    region: str = "IT",
) -> list[str]:
    """The keys of the sealed dead letters (``(value, sealed_key token)``) whose payload mentions
    one of the component's identity or fact values (``schemas.privacy.mentions``; phones in any
    way ingest reads them in ``region``) or one of its pseudonyms (``tokens``: a contact the
    gateway sealed that the worker dead-lettered holds those, not the values), to destroy. A
    payload whose key is already gone is not asked twice."""
    letters = list(letters)
    subjects = [*comp.identities, *comp.facts, *(Subject("pseudonym", t) for t in tokens)]
    found: list[str] = []
    for i in range(0, len(letters), 5000):
        chunk = letters[i : i + 5000]
        keys = ring.resolve({token for _, token in chunk})
        for value, token in chunk:
            raw = open_payload(value, token, keys)
            if raw is not None and mentions(raw, subjects, region):
                found.append(token)
    return sorted(set(found))


def sealed_dead_letters(settings, topics: Iterable[str], timeout: float = 60.0) -> list[tuple[bytes, str]]:
    """``(value, sealed_key)`` of every sealed record of the DLQ ``topics``, read from the first
    offset to the end offsets found at the start (a topic that does not exist has none)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **settings.kafka.client_config())
    out: list[tuple[bytes, str]] = []
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps) if tps else {}
        todo = {tp for tp in tps if ends[tp] > 0}
        if not todo:
            return out
        consumer.assign(list(todo))
        consumer.seek_to_beginning(*todo)
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"erasure: {len(todo)} DLQ partitions not read to their end in {timeout:.0f} s")
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        break
                    token = dict(m.headers or []).get(SEALED_KEY_HEADER)
                    if token and m.value:
                        out.append((m.value, token.decode()))
                if consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close()
    return out


@dataclass
class ErasureReport:
    customer_ids: list[str]
    keys_destroyed: int
    rows: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0
    event_id: str = ""
    dead_letters: int = 0

    def as_json(self) -> dict:
        return {
            "erased": True,
            "customer_ids": self.customer_ids,
            "keys_destroyed": self.keys_destroyed,
            "dead_letters": self.dead_letters,
            "read_model_rows": sum(self.rows.values()),
            "tables": self.rows,
            "tombstones": self.tombstones,
            "event_id": self.event_id,
        }


def erase(
    conn: psycopg.Connection,
    schema: str,
    ring,
    producer,
    codec,
    subject: Subject,
    *,
    requested_by: str = "cli",
    settle_seconds: float = 2.0,
    topic_prefix: str = "",
    dead_letters: Iterable[tuple[bytes, str]] = (),
    region: str = "IT",
) -> ErasureReport:
    """Erase the customer holding ``subject`` (module doc). ``ring``: a ``schemas.keystore.PostgresKeyRing``;
    ``producer``: a ``threadline.kafka.BoundedProducer``; ``dead_letters``: the sealed DLQ records
    (``sealed_dead_letters``), whose keys are destroyed where the payload mentions the customer
    (``region``: of phones written without a country code, THREADLINE_DEFAULT_PHONE_REGION as ingest).
    The read-model purge runs again after ``settle_seconds``, for rows a projector batch that
    opened its records before the keys were destroyed committed after the first purge."""
    comp = component(conn, schema, subject, ring.current_token(subject))
    tokens = ring.tokens_of([*comp.identities, *comp.facts])
    # opened before the identities' keys go: needs none of them
    letters = dead_letters_of(comp, ring, dead_letters, tokens, region)
    destroyed = ring.destroy(tokens)
    destroyed_letters = ring.destroy(letters)
    rows = purge(conn, comp)
    if settle_seconds > 0:
        time.sleep(settle_seconds)
        for name, n in purge(conn, comp).items():
            rows[name] = rows.get(name, 0) + n
    labels = [Subject(s.kind, t, s.platform).label for s in comp.identities for t in ring.tokens_of([s])]
    stones = tombstones(comp, labels, topic_prefix)
    event = erased_event(
        comp,
        keys_destroyed=destroyed,
        rows=sum(rows.values()),
        tombstones=len(stones),
        at=datetime.now(UTC),
        requested_by=requested_by,
    )
    topic = catalog.PRIVACY_ERASURES.name
    sends = [producer.send(t, key=k, value=None) for t, k in stones]
    sends.append(
        producer.send(topic, key=event["event_id"].encode(), value=codec.encode(topic, schemas.ERASURE, event))
    )
    producer.wait(sends, what="erasure tombstones and event")
    log.info(
        "privacy_erased",
        customers=len(comp.customer_ids),
        keys_destroyed=destroyed,
        read_model_rows=sum(rows.values()),
        tombstones=len(stones),
        dead_letters=destroyed_letters,
        event_id=event["event_id"],
    )
    return ErasureReport(
        list(comp.customer_ids), destroyed, rows, len(stones), event["event_id"], dead_letters=destroyed_letters
    )


# -- right of access ------------------------------------------------------------------------------------

BUNDLE_FORMAT = "threadline.access-bundle.v1"


def _rows(conn: psycopg.Connection, sql: str, params) -> list[dict]:
    return [r[0] for r in conn.execute(sql, params).fetchall()]


def access_bundle(
    conn: psycopg.Connection, schema: str, subject: Subject, token: str | None = None, at: datetime | None = None
) -> dict:
    """Everything the projection ``schema`` holds about the customer of ``subject``, as one JSON document."""
    comp = component(conn, schema, subject, token)
    ids = list(comp.customer_ids)
    contacts = _rows(
        conn,
        f"select to_jsonb(c) from {schema}.contacts c where origin_customer_id = any(%s)"
        " order by occurred_at, event_id",
        (ids,),
    )
    conversations = _rows(
        conn,
        f"select to_jsonb(c) from {schema}.conversations c where origin_customer_id = any(%s)"
        " order by opened_at, conversation_id",
        (ids,),
    )
    events = _rows(
        conn,
        f"select to_jsonb(e) from {schema}.conversation_events e where origin_customer_id = any(%s)"
        " order by occurred_at, event_id",
        (ids,),
    )
    identities = _rows(
        conn,
        f"select to_jsonb(i) from {schema}.customer_identities i where origin_customer_id = any(%s)"
        " order by kind, platform, value",
        (ids,),
    )
    identity_events = _rows(
        conn,
        f"select to_jsonb(e) from {schema}.identity_events e where customer_id = any(%s)"
        " order by occurred_at, event_id",
        (ids,),
    )
    return bundle(ids, contacts, conversations, events, identities, identity_events, at or datetime.now(UTC))


def bundle(
    customer_ids: list[str],
    contacts: list[dict],
    conversations: list[dict],
    conversation_events: list[dict],
    identities: list[dict],
    identity_events: list[dict],
    at: datetime,
) -> dict:
    """The access bundle (pure): facts gathered from the contacts and conversation events, once each;
    the consent history, every signal in event-time order with the contact that carried it."""
    facts: dict[tuple[str, str], dict] = {}
    for row in [*contacts, *conversation_events]:
        for f in row.get("facts") or []:
            facts.setdefault(
                (f.get("kind"), f.get("value")),
                {"kind": f.get("kind"), "value": f.get("value"), "source": f.get("source")},
            )
    consent = sorted(
        (
            {
                "purpose": x.get("purpose"),
                "channel": x.get("channel"),
                "granted": x.get("granted"),
                "source": x.get("source"),
                "signal_at": row.get("occurred_at"),
                "evidence": row.get("event_id"),
            }
            for row in contacts
            for x in row.get("consent") or []
        ),
        key=lambda x: (str(x["signal_at"]), str(x["evidence"])),
    )
    return {
        "format": BUNDLE_FORMAT,
        "generated_at": at.isoformat(),
        "customer_ids": customer_ids,
        "consent": consent,
        "identities": identities,
        "contacts": contacts,
        "conversations": conversations,
        "conversation_events": conversation_events,
        "identity_events": identity_events,
        "facts": sorted(facts.values(), key=lambda f: (str(f["kind"]), str(f["value"]))),
    }


# -- wiring: the CLI and the API call these ------------------------------------------------------------


class PrivacyOff(RuntimeError):
    """Erasure needs sealed records: THREADLINE_PRIVACY_MASTER_KEY is unset."""


def run_erase(
    settings, identity: str, *, requested_by: str = "cli", settle_seconds: float = 2.0, topic_prefix: str = ""
) -> ErasureReport:
    """``erase`` with the settings' key store, database and Kafka. ValueError: not an identity;
    PrivacyOff; NotFound; KafkaUnavailable / KeyStoreUnavailable: retry."""
    from projectors.engine.schema import live_schema
    from schemas.codec import make_codec
    from schemas.keystore import make_store
    from schemas.privacy import parse_identity
    from threadline.kafka import BoundedProducer

    subject = parse_identity(identity)
    ring = make_store(settings, owner=True)  # destroys keys, then VACUUMs the table: the owner's
    if ring is None:
        raise PrivacyOff("erasure needs THREADLINE_PRIVACY_MASTER_KEY: records written in the clear cannot be shredded")
    producer = BoundedProducer.from_settings(settings, client_id="threadline-privacy")
    try:
        with psycopg.connect(settings.effective_pg_dsn, autocommit=True, application_name="threadline-privacy") as conn:
            return erase(
                conn,
                live_schema(settings, "support"),
                ring,
                producer,
                make_codec(settings),
                subject,
                requested_by=requested_by,
                settle_seconds=settle_seconds,
                topic_prefix=topic_prefix,
                dead_letters=sealed_dead_letters(settings, sealed_dlqs(topic_prefix)),
                region=settings.connectors.default_phone_region,
            )
    finally:
        producer.close()
        ring.close()


def run_export(settings, identity: str, dsn: str | None = None) -> dict:
    """``access_bundle`` of the live support projection (on ``dsn``, the read API's role by default)."""
    from projectors.engine.schema import live_schema
    from schemas.keystore import make_store
    from schemas.privacy import parse_identity

    from schemas.keystore import KeyStoreUnavailable

    subject = parse_identity(identity)
    ring = make_store(settings)
    token = None  # only to find rows a projector could not open: the read model holds values in the clear
    if ring is not None:
        try:
            token = ring.current_token(subject)
        except (KeyStoreUnavailable, psycopg.Error) as exc:  # e.g. the read API's role cannot read the key store
            log.info("access_bundle_without_key_store", error=type(exc).__name__)
        finally:
            ring.close()
    with psycopg.connect(
        dsn or settings.effective_pg_api_dsn, autocommit=True, application_name="threadline-privacy"
    ) as conn:
        return access_bundle(conn, live_schema(settings, "support"), subject, token)
