"""Customer profiles: the read API's customer card, for many customers at once, and its publication
on the compacted topic customer-profiles.v1 (schema ``schemas/avro/customer_profile``).

One set of queries (``queries``) and one function shaping their rows (``card``) serve both
GET /customers/{id} (for one id) and the projector (for every customer a batch touched), so the
topic and the API cannot tell different stories. Consent is marketing's ``consent_latest``
definition (``ddl.CONSENT_LATEST``), read from the same schema as the rest of the profile.

When a profile is produced, relative to the PostgreSQL commit of the batch:
  * in the batch's transaction, with its rows and offsets, the projector queues in
    ``profile_outbox`` the customer ids the batch touched: the ids its records carry (merges and
    unmerges included) and the customers they stand for today;
  * after the commit it reads the queued customers' profiles from the committed state (one
    repeatable-read snapshot), produces them keyed by customer_id — a tombstone (null value) for an
    id merged into another customer — waits for Kafka's acknowledgements, and only then removes
    them from the outbox.
So a profile is never produced from rows that did not commit, and a crash (or a lost Kafka) between
the commit and the acknowledgement loses nothing: the outbox is published again when the projector
(or a standby taking over) starts. That is at least once, and a repeat is harmless: every record is
the whole profile under its key, on a compacted topic. Only the live projector ``threadline
project`` runs for support publishes; rebuilds and as-of snapshots do not.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

import schemas
from projectors import consent as consent_ledger
from projectors import ddl, definitions
from projectors.rows import Batch
from schemas.codec import Codec
from schemas.privacy import profile_subjects, pseudonymize_profile
from threadline import metrics
from threadline.logging import get_logger

log = get_logger("threadline.profiles")

CHUNK = 2000  # customers read and produced per round of a publication


def queries(s: str, ids: str = "%(ids)s") -> dict[str, str]:
    """The card's queries over schema ``s``, for the customers of the array ``ids`` (an SQL
    expression; by default the parameter ``%(ids)s``), each row naming its customer."""
    s = ddl.check_ident(s)
    return {
        "summary": f"select * from {s}.customer_summary where customer_id = any({ids})",
        "merged": f"select customer_id, origin_customer_id from {s}.customers where customer_id = any({ids})"
        " and origin_customer_id <> customer_id order by customer_id, origin_customer_id",
        "identities": f"select customer_id, kind, platform, value, first_seen_at, last_seen_at"
        f" from {s}.customer_identity_list where customer_id = any({ids})"
        " order by customer_id, kind, platform nulls first, value",
        "facts": f"select customer_id, kind, value, first_given_at, last_given_at from {s}.customer_facts"
        f" where customer_id = any({ids}) order by customer_id, last_given_at desc, kind, value",
        "conversations": f"select customer_id, conversation_id, state, channel, channels, opened_at, last_event_at,"
        f" sla_state, merged_into, merged_into_customer_id from {s}.conversation_state"
        f" where customer_id = any({ids}) order by customer_id, last_event_at desc, conversation_id",
    }


def consent_query(s: str) -> str:
    """The latest consent signal per channel and purpose of the customers ``%(ids)s``."""
    return (
        f"select customer_id, channel, purpose, granted, source, signal_at, event_id"
        f" from ({ddl.CONSENT_LATEST.format(s=ddl.check_ident(s))}) x"
        " where customer_id = any(%(ids)s) order by customer_id, channel, purpose"
    )


def by_customer(parts: dict[str, list[dict]]) -> dict[str, dict[str, list[dict]]]:
    """Rows of ``queries`` grouped per customer, order kept, without the customer_id column
    (the summary row keeps it)."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for name, rows in parts.items():
        for r in rows:
            cid = r["customer_id"]
            out[cid][name].append(r if name == "summary" else {k: v for k, v in r.items() if k != "customer_id"})
    return out


def card(customer_id: str, requested: str, rows: dict[str, list[dict]], include_merged: bool = False) -> dict:
    """The context card of ``customer_id`` from its rows of ``queries``."""
    summary = (rows.get("summary") or [{}])[0]
    facts = rows.get("facts") or []
    convs = rows.get("conversations") or []
    last_order = next((f for f in facts if f["kind"] == "order_number"), None)
    return {
        "customer_id": customer_id,
        "requested_id": requested,
        "merged_ids": [m["origin_customer_id"] for m in rows.get("merged") or []],
        "first_contact_at": summary.get("first_contact_at"),
        "last_contact_at": summary.get("last_contact_at"),
        "contacts": summary.get("contacts", 0),
        "channels": summary.get("channels") or [],
        "language": summary.get("language"),
        "sentiment": definitions.Sentiment(
            summary.get("sentiment_latest"),
            summary.get("sentiment_7d"),
            summary.get("sentiment_prior_23d"),
            summary.get("sentiment_30d"),
        ).as_dict(),
        "identities": rows.get("identities") or [],
        "facts": facts,
        "last_order": last_order["value"] if last_order else None,
        "open_conversations": [c for c in convs if c["state"] == "open"],
        "prior_conversations": [c for c in convs if c["state"] == "resolved"][:20],
        # conversations whose contacts now belong to another one (a late contact, an identity
        # merge): shown only when asked for
        **({"merged_conversations": [c for c in convs if c["state"] == "merged_into"][:20]} if include_merged else {}),
    }


def _num(v) -> float | None:
    return None if v is None else float(v)


def profile_record(c: dict, consent: list[dict], as_of: datetime) -> dict:
    """A card (``card``) and its consent rows as a customer_profile record."""
    return {
        "customer_id": c["customer_id"],
        "as_of": as_of,
        "merged_ids": c["merged_ids"],
        "first_contact_at": c["first_contact_at"],
        "last_contact_at": c["last_contact_at"],
        "contacts": int(c["contacts"] or 0),
        "channels": list(c["channels"]),
        "language": c["language"],
        "identities": [
            {k: i[k] for k in ("kind", "platform", "value", "first_seen_at", "last_seen_at")} for i in c["identities"]
        ],
        "facts": [{k: f[k] for k in ("kind", "value", "first_given_at", "last_given_at")} for f in c["facts"]],
        "open_conversations": [
            {
                "conversation_id": o["conversation_id"],
                "channel": o["channel"],
                "channels": list(o["channels"] or []),
                "opened_at": o["opened_at"],
                "last_event_at": o["last_event_at"],
                "sla_state": o["sla_state"],
            }
            for o in c["open_conversations"]
        ],
        "last_order": c["last_order"],
        "consent": [{k: x[k] for k in ("channel", "purpose", "granted", "source", "signal_at")} for x in consent],
        "sentiment": {
            **{k: _num(c["sentiment"][k]) for k in ("latest", "recent_7d", "prior_23d", "avg_30d")},
            "baseline": c["sentiment"]["baseline"],
            "trend": c["sentiment"]["trend"],
        },
    }


def without_marketing(record: dict, consent: list[dict]) -> dict:
    """The profile as published for a customer whose latest marketing consent signal withdrew it
    (``projectors/consent.py``): the sentiment, the signal marketing's segments are made of, is
    left out (nulls, baseline neutral, trend unknown); the consent rows stay, so a consumer sees
    why. Other customers' profiles are returned as they are."""
    if not consent_ledger.withdrawn(consent_ledger.from_row(r) for r in consent):
        return record
    return dict(
        record,
        sentiment={"latest": None, "recent_7d": None, "prior_23d": None, "avg_30d": None}
        | {"baseline": "neutral", "trend": "unknown"},
    )


def touched_ids(batch: Batch) -> list[str]:
    """The customer ids a batch's records name: their customers, merges' and unmerges' both sides,
    and the customers an identity was moved from or to while the batch was written."""
    ids = {r[0] for r in batch.customers} | batch.touched
    for op in batch.alias_ops:
        ids |= {op.absorbed, op.survivor}
    return sorted(ids)


class Publisher:
    """Publishes the profiles of the customers a projector touched, from ``schema``, to ``topic``.
    With a key store (``keyring``, privacy on: ``schemas.keystore.make_store``) the profiles carry
    pseudonyms in place of identity and fact values (``schemas.privacy.pseudonymize_profile``);
    readers open them with the reader codec (``schemas.keystore.make_reader_codec``)."""

    def __init__(self, schema: str, projector: str, codec: Codec, topic: str, keyring=None):
        self.keyring = keyring
        self.s = ddl.check_ident(schema)
        self.projector = projector
        self.codec = codec
        self.topic = topic
        self.published = 0
        self.tombstones = 0
        self._produced = metrics.EVENTS_PRODUCED.labels(f"projector:{projector}", topic)

    def queue(self, cur, batch: Batch) -> None:
        """Queue the customers ``batch`` touched: inside the batch's transaction, after its rows."""
        ids = touched_ids(batch)
        if not ids:
            return
        cur.execute(
            f"insert into profile_outbox (projector, customer_id)"
            f" select %(p)s, x from (select unnest(%(ids)s::text[]) union"
            f" select customer_id from {self.s}.customers where origin_customer_id = any(%(ids)s)) u(x)"
            f" on conflict do nothing",
            {"p": self.projector, "ids": ids},
        )

    def snapshot(self, conn: psycopg.Connection, ids: list[str]) -> list[tuple[str, dict | None]]:
        """(key, profile record, or None for a merged-away id) of ``ids``, from one snapshot."""
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute("set transaction isolation level repeatable read")
            as_of = cur.execute(f"select now from {self.s}.clock").fetchone()["now"]
            where = {
                r["origin_customer_id"]: r["customer_id"]
                for r in cur.execute(
                    f"select origin_customer_id, customer_id from {self.s}.customers where origin_customer_id = any(%s)",
                    (ids,),
                )
            }
            live = sorted(i for i in ids if where.get(i) == i)
            params = {"ids": live}
            parts = {name: cur.execute(sql, params).fetchall() for name, sql in queries(self.s).items()}
            consent: dict[str, list[dict]] = defaultdict(list)
            for r in cur.execute(consent_query(self.s), params):
                consent[r["customer_id"]].append(r)
        grouped = by_customer(parts)
        out: list[tuple[str, dict | None]] = []
        for i in ids:
            if i not in where:
                continue  # named by a record PostgreSQL refused: no customer to speak of
            if where[i] != i:
                out.append((i, None))
            else:
                record = profile_record(card(i, i, grouped.get(i, {})), consent.get(i, []), as_of)
                out.append((i, without_marketing(record, consent.get(i, []))))
        return self.pseudonymized(out)

    def pseudonymized(self, records: list[tuple[str, dict | None]]) -> list[tuple[str, dict | None]]:
        """``records`` with pseudonyms for their personal values (one key-store query), when
        privacy is on; as they are when it is off."""
        if self.keyring is None:
            return records
        subjects = {s: None for _, rec in records if rec is not None for s in profile_subjects(rec)}
        tokens = self.keyring.current_tokens(list(subjects))
        return [(key, None if rec is None else pseudonymize_profile(rec, tokens)) for key, rec in records]

    def queue_all(self, conn: psycopg.Connection) -> int:
        """Queue every customer id the schema knows (a merged-away id gets its tombstone): a
        backfill, for a topic created after the projection or a consumer that needs the full set."""
        cur = conn.execute(
            f"insert into profile_outbox (projector, customer_id)"
            f" select %s, origin_customer_id from {self.s}.customers on conflict do nothing",
            (self.projector,),
        )
        return max(cur.rowcount, 0)

    def queued(self, conn: psycopg.Connection) -> int:
        return conn.execute("select count(*) from profile_outbox where projector = %s", (self.projector,)).fetchone()[0]

    def publish(self, conn: psycopg.Connection, producer, on_progress=None) -> int:
        """Produce every queued profile, wait for the acknowledgements, then unqueue them
        (``on_progress(done)`` after each chunk)."""
        done = 0
        while True:
            ids = [
                r[0]
                for r in conn.execute(
                    "select customer_id from profile_outbox where projector = %s order by customer_id limit %s",
                    (self.projector, CHUNK),
                )
            ]
            if not ids:
                return done
            records = self.snapshot(conn, ids)
            futures = [
                producer.send(
                    self.topic,
                    key=key.encode(),
                    value=None if rec is None else self.codec.encode(self.topic, schemas.CUSTOMER_PROFILE, rec),
                )
                for key, rec in records
            ]
            producer.wait(futures, "customer profiles")  # within the produce deadline, or KafkaUnavailable
            conn.execute(
                "delete from profile_outbox where projector = %s and customer_id = any(%s)", (self.projector, ids)
            )
            tombstones = sum(rec is None for _, rec in records)
            self.published += len(records) - tombstones
            self.tombstones += tombstones
            self._produced.inc(len(records))
            done += len(records)
            log.info(
                "profiles_published",
                projector=self.projector,
                topic=self.topic,
                profiles=len(records) - tombstones,
                tombstones=tombstones,
            )
            if on_progress is not None:
                on_progress(done)
