"""Crypto-shredding end to end on the real broker and PostgreSQL (docs/privacy.md).

Giulia tweets, emails (with her order number, a Message-ID naming her) and chats with both her address and her handle, so
identity merges her two customers; Sanne fills a web form. Contacts go through the gateway's
``POST /contacts`` with privacy on (sealed before producing), the stream worker resolves them
(its own process, pseudonyms only), the support projector opens them into the read model. Then:

* the right-of-access bundle of Giulia holds her three contacts and identities, nothing of Sanne;
* ``threadline privacy erase --identity email:…`` (the CLI, a process of its own);
* a scan of every topic's raw bytes (keys, values, headers), every table of every PostgreSQL
  schema, an analysts' export, the worker's folder (its RocksDB state) and log and the erasure
  command's output finds none of Giulia's
  identity values, names or texts, in the clear or in the common encodings (tests/privacy_scan.py);
* Sanne is intact; a rebuild of the projection after the erasure has Giulia's contacts as
  placeholders (counts kept, no personal data) and Sanne in the clear;
* Giulia's address writing again starts a new customer;
* record keys of every topic: no identity value in the clear, for either customer.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from connectors.gateway import create_app as gateway_app
from fixtures.tokens import API_TOKENS, CONTACT_TOKEN, bearer, token_env, token_settings
from projectors.api import create_app as api_app
from projectors.engine.runner import Sources
from projectors.erasure import run_export
from projectors.export import export
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets
from streams.identity_stage import StateTable
from streams.identity_store import RocksStore
from threadline.catalog import CUSTOMER_PROFILES, INGEST_DLQ, PRIVACY_ERASURES
from tests.integration.streams.stream_helpers import REPO, settle, stream_run
from tests.privacy_scan import scan, scan_tree
from fixtures.projections import drop_projections
from fixtures.providers import SECRETS, headers

pytestmark = pytest.mark.e2e

BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
MASTER = base64.b64encode(os.urandom(32)).decode()
PSEUDONYM = base64.b64encode(os.urandom(32)).decode()
PRIVACY = {
    "privacy_master_key": SecretStr(MASTER),
    "privacy_pseudonym_key": SecretStr(PSEUDONYM),
    "privacy_key_cache_seconds": 0.0,
}
PRIVACY_ENV = {"THREADLINE_PRIVACY_MASTER_KEY": MASTER, "THREADLINE_PRIVACY_PSEUDONYM_KEY": PSEUDONYM}


def contact(tag: str, pid: str, channel: str, identities: list[dict], minutes: int, **extra) -> dict:
    return {
        "provider_id": f"{tag}-{pid}",
        "connector": "e2e",
        "channel": channel,
        "direction": "inbound",
        "occurred_at": (BASE + timedelta(minutes=minutes)).isoformat(),
        "identities": identities,
        **extra,
    }


def all_topic_records(settings, topics: list[str]) -> dict[str, list]:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    out = {}
    try:
        for topic in topics:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            got: list = []
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                for msgs in consumer.poll(timeout_ms=500).values():
                    got += msgs
            out[topic] = got
    finally:
        consumer.close()
    return out


def raw_bytes(records) -> bytes:
    parts = []
    for m in records:
        parts += [m.key or b"", m.value or b""] + [k.encode() + (v or b"") for k, v in (m.headers or [])]
    return b"\n".join(parts)


def every_table_text(dsn: str) -> bytes:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        chunks = []
        for schema, table in tables:
            rows = conn.execute(f'select t::text from "{schema}"."{table}" t').fetchall()
            chunks += [r[0].encode() for r in rows]
        # bytea columns in row text are hex: the scan's hex needles cover them
    return b"\n".join(chunks)


def project(settings, world, prefix: str, profiles: bool = False):
    """The support and marketing projections under ``prefix``; with ``profiles`` the support
    projector publishes customer-profiles.v1, as the live one does."""
    s = settings.model_copy(update={"projection_prefix": prefix})
    sources = Sources(
        contacts=world.topics.resolved, conversations=world.topics.conversations, identities=world.topics.identities
    )
    for projection in ("support", "marketing"):
        topic = CUSTOMER_PROFILES.name if profiles and projection == "support" else None
        read_model_projector(s, projection, sources=sources, profiles_topic=topic).run(
            stop_at=end_offsets(s, sources.topics())
        )
    return s


def rejected_x_event(tag: str, who: str, payload: dict) -> tuple[bytes, dict]:
    """An X webhook the gateway cannot map (an event type it does not take): a dead letter."""
    content = json.dumps({"for_user_id": "4711", f"{who}{tag}_events": [payload]}).encode()
    return content, headers("x", content, "http://testserver/webhooks/x")


def erased_conversations(dsn: str, prefix: str, erased_ids: list[str]) -> list[str]:
    """The conversations of the erased customers in the prefix's support schema (a rebuild projects
    their conversation events again: ids and times, no personal data)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'select conversation_id from "{prefix}support".conversations where origin_customer_id = any(%s)',
            (erased_ids,),
        )
        return [r[0] for r in rows.fetchall()]


def projection_rows(dsn: str, prefix: str, erased_ids: list[str]) -> dict[str, list[str]]:
    """Every row of every table of the prefix's support and marketing schemas (but their build
    metadata), as canonical JSON, without the rows that name an erased customer, contact or
    conversation (the kept SLA clocks name only their conversation)."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for projection in ("support", "marketing"):
            schema = f"{prefix}{projection}"
            tables = conn.execute(
                "select table_name from information_schema.tables where table_schema = %s"
                " and table_type = 'BASE TABLE' and table_name <> 'meta' order by 1",
                (schema,),
            ).fetchall()
            for (table,) in tables:
                rows = [
                    json.dumps(r[0], sort_keys=True)
                    for r in conn.execute(f'select to_jsonb(t) from "{schema}"."{table}" t').fetchall()
                ]
                out[f"{projection}.{table}"] = sorted(r for r in rows if not any(i in r for i in erased_ids))
    return out


@pytest.fixture(scope="module")
def story(services, catalog_topics, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    settings = services.settings.model_copy(
        update={**token_settings(), **PRIVACY, "x_consumer_secret": SecretStr(SECRETS["x_consumer_secret"])}
    )
    g = {
        "email": f"giulia.{tag}@example.it",
        "handle": f"giuliar{tag}",
        "order": f"ORD{tag.upper()}",
        "name": f"Giulia Rossi{tag}",
        "message_id": f"<{tag}.giulia.rossi@posta.example.it>",  # a Message-ID naming her
        "texts": [
            f"Il mio ordine {tag} è arrivato rotto",
            f"Ecco la foto del pacco {tag}",
            f"Ho scritto su twitter {tag}",
        ],
    }
    s = {"email": f"sanne.{tag}@example.nl", "text": f"Ik wil een skiverzekering {tag}", "name": f"Sanne de Vries{tag}"}
    handle = {"kind": "social", "value": g["handle"], "platform": "twitter"}
    email = {"kind": "email", "value": g["email"]}
    posts = [
        contact(
            tag,
            "tweet",
            "twitter",
            [{**handle, "primary": True}],
            0,
            text=g["texts"][0],
            actor={"role": "customer", "display_name": g["name"]},
        ),
        contact(
            tag,
            "mail",
            "email",
            [{**email, "primary": True}],
            10,
            text=g["texts"][1],
            subject=f"Foto {tag}",
            facts=[{"kind": "order_number", "value": g["order"], "source": "text"}],
            attachments=[{"name": f"pacco-{tag}.jpg", "content_type": "image/jpeg", "size_bytes": 100}],
            consent=[{"purpose": "marketing", "channel": "email", "granted": False, "source": "email"}],
            thread={"message_id": g["message_id"]},
        ),
        contact(tag, "chat", "chat", [{**email, "primary": True}, handle], 20, text=g["texts"][2]),
        contact(
            tag,
            "form",
            "web_form",
            [{"kind": "email", "value": s["email"], "primary": True}],
            30,
            text=s["text"],
            actor={"role": "customer", "display_name": s["name"]},
            consent=[{"purpose": "marketing", "channel": "email", "granted": True, "source": "web_form"}],
        ),
        # Sanne withdraws her marketing consent later in event time, by chat
        contact(
            tag,
            "withdraw",
            "chat",
            [{"kind": "email", "value": s["email"], "primary": True}],
            50,
            text=f"Geen reclame meer {tag}",
            consent=[{"purpose": "marketing", "channel": "email", "granted": False, "source": "chat"}],
        ),
        contact(
            tag,
            "review",
            "review",
            [{"kind": "social", "value": f"emre{tag}", "platform": "instagram", "primary": True}],
            40,
            text=f"Harika hizmet {tag}",
        ),
    ]
    prefixes = []
    home = tmp_path_factory.mktemp("privacy")
    with stream_run(services, "pv", home) as world:
        # state on disk: scanned below; the keys and the key store's role: it seals its dead letters
        worker = world.worker(THREADLINE_STREAMS_STORE="rocksdb", **PRIVACY_ENV)
        resolved, identities, conversations = (world.reader(n) for n in ("resolved", "identities", "conversations"))
        gw = gateway_app(settings, contacts_topic=world.topics.contacts)
        accepted = []
        with TestClient(gw, headers=bearer(CONTACT_TOKEN)) as client:
            for body in posts:
                r = client.post("/contacts", json=body)
                assert r.status_code == 202, r.text
                accepted.append(r.json()["event_id"])
                resolved.wait_for(lambda vs, e=accepted[-1]: e in {v["event_id"] for v in vs}, what="resolved")
            # provider payloads the gateway cannot map, with Giulia's and Sanne's data: dead letters
            rejected = {
                "giulia": rejected_x_event(
                    tag, "gfav", {"user": {"name": g["name"], "email": g["email"]}, "text": g["texts"][0]}
                ),
                "sanne": rejected_x_event(tag, "sfav", {"user": {"name": s["name"], "email": s["email"]}}),
            }
            for content, hdrs in rejected.values():
                r = client.post("/webhooks/x", content=content, headers=hdrs)
                assert r.status_code == 202 and r.json()["dead_lettered"] == 1, r.text
        # records that are no contact, written to contacts.v1 past the gateway, naming Giulia and
        # Sanne: the worker dead-letters them to streams.dlq.v1 (sealed, privacy on). On contacts.v1
        # itself they stay as written: no erasure reaches what a producer put past the gateway
        # (docs/privacy.md); the scan of contacts.v1 leaves out these two records, by their keys.
        not_contacts = {
            who: json.dumps({"note": f"not a contact {tag}", "from": v["email"], "name": v["name"]}).encode()
            for who, v in (("giulia", g), ("sanne", s))
        }
        for who, raw in not_contacts.items():
            world.producer.raw(world.topics.contacts, f"not-a-contact-{who}-{tag}".encode(), raw)
        streams_dlq = world.reader("dlq", decode=False)
        streams_dlq_before = streams_dlq.wait_for(lambda vs: len(vs) >= 2, what="the worker's dead letters")
        identities.wait_for(lambda vs: any(v["event_type"] == "merged" for v in vs), what="merged")
        settle(conversations, quiet=6.0)
        prefixes.append(f"pv{world.run}a_")
        before = project(settings, world, prefixes[-1], profiles=True)
        with TestClient(api_app(before), headers=bearer(API_TOKENS["admin"])) as api:
            found = api.get("/customers/by-identity", params={"kind": "email", "value": g["email"]})
            assert found.status_code == 200, found.text
            giulia_id = found.json()["customer_id"]
            card_before = api.get(f"/customers/{giulia_id}").json()
            sanne_id = api.get("/customers/by-identity", params={"kind": "email", "value": s["email"]}).json()[
                "customer_id"
            ]
            sanne_segments = api.get(f"/marketing/customers/{sanne_id}/segments").json()
            sanne_ledger = api.get(f"/marketing/customers/{sanne_id}/consent-ledger").json()
            engagement = api.get("/marketing/engagement").json()
            reviews = api.get("/marketing/reviews").json()
            emre_segments = api.get(
                "/marketing/customers/{}/segments".format(
                    api.get(
                        "/customers/by-identity",
                        params={"kind": "social", "value": f"emre{tag}", "platform": "instagram"},
                    ).json()["customer_id"]
                )
            ).json()
        bundle = run_export(before, f"email:{g['email']}", dsn=before.effective_pg_dsn)
        with TestClient(api_app(before)) as api:
            ident = {"identity": f"email:{g['email']}"}
            access = {
                "admin": api.get("/privacy/access", params=ident, headers=bearer(API_TOKENS["admin"])),
                "support": api.get("/privacy/access", params=ident, headers=bearer(API_TOKENS["support"])),
                "none": api.get("/privacy/access", params=ident),
                "bad": api.get("/privacy/access", params={"identity": "nokind"}, headers=bearer(API_TOKENS["admin"])),
            }
            emre = f"social:instagram:emre{tag}"
            emre_id = api.get(
                "/customers/by-identity",
                params={"kind": "social", "value": f"emre{tag}", "platform": "instagram"},
                headers=bearer(API_TOKENS["admin"]),
            ).json()["customer_id"]
            api_erase = {
                "sales": api.post("/privacy/erasures", json={"identity": emre}, headers=bearer(API_TOKENS["sales"])),
                "admin": api.post("/privacy/erasures", json={"identity": emre}, headers=bearer(API_TOKENS["admin"])),
                "again": api.post("/privacy/erasures", json={"identity": emre}, headers=bearer(API_TOKENS["admin"])),
            }
            emre_card = api.get(f"/customers/{emre_id}", headers=bearer(API_TOKENS["admin"]))

        env = {
            **os.environ,
            **services.env(),
            **token_env(),
            **PRIVACY_ENV,
            "THREADLINE_PROJECTION_PREFIX": prefixes[-1],
            "THREADLINE_LOG_LEVEL": "DEBUG",
        }
        erased = subprocess.run(
            [
                sys.executable,
                "-m",
                "threadline.tools.cli",
                "privacy",
                "erase",
                "--identity",
                f"email:{g['email']}",
                "--topic-prefix",
                world.prefix,
                "--settle",
                "1",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert erased.returncode == 0, erased.stderr
        report = json.loads(erased.stdout)
        with TestClient(api_app(before), headers=bearer(API_TOKENS["admin"])) as api:
            card_after_erase = api.get(f"/customers/{giulia_id}")

        prefixes.append(f"pv{world.run}b_")
        rebuilt = project(settings, world, prefixes[-1])  # a projection rebuild after the erasure
        tables_after = every_table_text(services.settings.effective_pg_dsn)
        exported = home / "export.jsonl"  # an analysts' export after the erasure (threadline export)
        export(
            settings,
            [world.topics.resolved, world.topics.identities, world.topics.conversations],
            None,
            None,
            "jsonl",
            exported,
        )
        analysts = {}  # --pseudonymize; --purpose marketing
        for name, options in (("pseudonymized", {"pseudonymize": True}), ("marketing", {"purpose": "marketing"})):
            analysts[name] = home / f"export-{name}.jsonl"
            export(settings, [world.topics.resolved], None, None, "jsonl", analysts[name], **options)

        # The erased address writes again: a new customer (scanned above, before it is written)
        with TestClient(
            gateway_app(settings, contacts_topic=world.topics.contacts), headers=bearer(CONTACT_TOKEN)
        ) as c:
            again = c.post(
                "/contacts",
                json=contact(tag, "again", "email", [{**email, "primary": True}], 200, text=f"Sono tornata {tag}"),
            )
            assert again.status_code == 202, again.text
        again_id = again.json()["event_id"]
        rows = resolved.wait_for(lambda vs: again_id in {v["event_id"] for v in vs}, what="the new contact")
        again_customer = next(v["customer_id"] for v in rows if v["event_id"] == again_id)
        for r in (resolved, identities, conversations, streams_dlq):
            r.close()
        topics = [*world.topics.specs()]
        records = all_topic_records(
            services.settings, topics + [PRIVACY_ERASURES.name, CUSTOMER_PROFILES.name, INGEST_DLQ.name]
        )
        worker.stop()
        identity_stores = {  # the worker's local stores of the identity stage's tables, as it left them
            t: StateTable(t, RocksStore(home / "home1" / "faust" / world.app_id / "identity" / f"{t}.db"))
            for t in (world.topics.graph_changelog, world.topics.contacts_changelog)
        }
        identity_store_keys = {t: set(table.snapshot()) for t, table in identity_stores.items()}
        for table in identity_stores.values():
            table.store.close()
        erased_ids = [*report["customer_ids"], *accepted[:3], *api_erase["admin"].json()["customer_ids"], accepted[5]]
        erased_ids += erased_conversations(services.settings.effective_pg_dsn, prefixes[1], erased_ids)
        yield {
            "g": g,
            "s": s,
            "tag": tag,
            "accepted": accepted,
            "giulia_id": giulia_id,
            "card_before": card_before,
            "bundle": bundle,
            "report": report,
            "erase_output": erased.stdout + erased.stderr,
            "card_after_erase": card_after_erase,
            "again_customer": again_customer,
            "rebuilt": rebuilt,
            "before": before,
            "records": records,
            "home": home,
            "worker_log": worker.log_path,
            "identity_store_keys": identity_store_keys,
            "dsn": services.settings.effective_pg_dsn,
            "tables_after": tables_after,
            "access": access,
            "api_erase": api_erase,
            "emre_id": emre_id,
            "emre_card": emre_card,
            "exported": exported,
            "analysts": analysts,
            "sanne_segments": sanne_segments,
            "sanne_ledger": sanne_ledger,
            "emre_segments": emre_segments,
            "sanne_id": sanne_id,
            "engagement": engagement,
            "reviews": reviews,
            "settings": settings,
            "streams_dlq": f"{world.prefix}.streams.dlq.v1",
            "past_the_gateway": (
                world.topics.contacts,
                {f"not-a-contact-{who}-{tag}".encode() for who in not_contacts},
            ),
            "streams_dlq_count": len(streams_dlq_before),
            "dead_letters": {
                who: [
                    m
                    for m in records[INGEST_DLQ.name]
                    if f"{who}{tag}_events".encode() in dict(m.headers).get("reason", b"")
                ]
                for who in ("gfav", "sfav")
            },
            "rows_before_minus_erased": projection_rows(services.settings.effective_pg_dsn, prefixes[0], erased_ids),
            "rows_rebuilt_minus_erased": projection_rows(services.settings.effective_pg_dsn, prefixes[1], erased_ids),
        }
    with psycopg.connect(services.settings.effective_pg_dsn, autocommit=True) as conn:
        for prefix in prefixes:
            drop_projections(conn, prefix)


def giulia_values(st) -> list[str]:
    g = st["g"]
    return [
        g["email"],
        g["handle"],
        g["order"],
        g["name"],
        g["message_id"],
        *g["texts"],
        f"Foto {st['tag']}",
        f"pacco-{st['tag']}.jpg",
    ]


def test_before_erasure_the_read_model_shows_giulia_in_the_clear_from_sealed_records(story):
    card = story["card_before"]
    values = json.dumps(card, ensure_ascii=False)
    assert story["g"]["email"] in values and story["g"]["handle"] in values


def test_the_access_bundle_holds_giulias_contacts_conversations_identities_and_nothing_of_sanne(story):
    b = story["bundle"]
    assert b["format"] == "threadline.access-bundle.v1"
    assert sorted(c["event_id"] for c in b["contacts"]) == sorted(story["accepted"][:3])
    assert {i["value"] for i in b["identities"]} == {story["g"]["email"], story["g"]["handle"]}
    assert b["conversations"] and {f["value"] for f in b["facts"]} >= {story["g"]["order"]}
    text = json.dumps(b, ensure_ascii=False, default=str)
    assert story["s"]["email"] not in text and story["s"]["text"] not in text and story["accepted"][3] not in text
    assert all(t in text for t in story["g"]["texts"])
    assert [(x["purpose"], x["granted"], x["evidence"]) for x in b["consent"]] == [
        ("marketing", False, story["accepted"][1])
    ]


def test_the_erasure_destroyed_the_keys_and_dropped_the_rows(story):
    r = story["report"]
    assert r["erased"] and story["giulia_id"] in r["customer_ids"] and len(r["customer_ids"]) >= 2
    assert r["keys_destroyed"] >= 3  # the address, the handle, the order number
    assert r["read_model_rows"] > 0 and r["tombstones"] > 0
    assert story["card_after_erase"].status_code == 404


def test_the_erased_event_carries_no_personal_data(story):
    [event] = [m for m in story["records"][PRIVACY_ERASURES.name] if m.key == story["report"]["event_id"].encode()]
    assert scan(event.value, giulia_values(story)) == []


def test_no_topic_holds_giulia_in_the_clear_or_encoded(story):
    contacts, injected = story["past_the_gateway"]
    records = {
        topic: [m for m in msgs if topic != contacts or m.key not in injected]
        for topic, msgs in story["records"].items()
    }
    assert len(records[contacts]) == len(story["records"][contacts]) - 2
    assert story["streams_dlq"] in records  # the worker's dead letters are scanned too
    found = {topic: scan(raw_bytes(msgs), giulia_values(story)) for topic, msgs in records.items()}
    assert {t: hits for t, hits in found.items() if hits} == {}
    # the scan sees what is there: Sanne's and Giulia's pseudonymous records are on the topics
    assert sum(len(m) for m in story["records"].values()) > 10


def test_no_postgresql_table_holds_giulia(story):
    assert scan(story["tables_after"], giulia_values(story)) == []
    assert scan(story["tables_after"], [story["s"]["email"], story["s"]["text"]])  # the scan sees Sanne's rows


def test_no_log_or_state_file_holds_giulia(story):
    assert scan(story["erase_output"].encode(), giulia_values(story)) == []
    assert scan_tree(story["home"], giulia_values(story)) == []  # the worker's folder, log and state


def test_sanne_is_intact_and_the_rebuild_keeps_giulias_contacts_as_placeholders(story):
    with TestClient(api_app(story["rebuilt"]), headers=bearer(API_TOKENS["admin"])) as api:
        sanne = api.get("/customers/by-identity", params={"kind": "email", "value": story["s"]["email"]})
        assert sanne.status_code == 200, sanne.text
    with psycopg.connect(story["dsn"], autocommit=True) as conn:
        schema = f"{story['rebuilt'].projections.prefix}support"
        rows = conn.execute(
            f"select event_id::text, text, metadata from {schema}.contacts where event_id::text = any(%s)",
            (story["accepted"],),
        ).fetchall()
    by_id = {e: (t, m) for e, t, m in rows}
    assert by_id[story["accepted"][3]][0] == story["s"]["text"]  # Sanne in the clear
    for eid in story["accepted"][:3]:  # Giulia's contacts still counted, with no personal data
        text, metadata = by_id[eid]
        assert text is None and metadata.get("privacy") == "erased"


def test_the_erased_address_writing_again_is_a_new_customer(story):
    assert story["again_customer"] not in story["report"]["customer_ids"]


def test_no_topic_key_holds_an_identity_in_the_clear(story):
    identities = [story["g"]["email"], story["g"]["handle"], story["s"]["email"]]
    keyed = {t: [m.key for m in msgs if m.key] for t, msgs in story["records"].items()}
    assert sum(len(k) for k in keyed.values()) > 10
    assert {
        t: scan(b"\n".join(keys), identities) for t, keys in keyed.items() if scan(b"\n".join(keys), identities)
    } == {}


def test_the_access_bundle_over_the_api_is_the_admins_and_the_same_as_the_cli(story):
    a = story["access"]
    assert a["none"].status_code == 401 and a["support"].status_code == 403
    assert a["bad"].status_code == 400 and a["bad"].json()["fields"][0]["field"] == "identity"
    assert a["admin"].status_code == 200
    body = a["admin"].json()
    assert sorted(c["event_id"] for c in body["contacts"]) == sorted(story["accepted"][:3])
    assert body["identities"] == json.loads(json.dumps(story["bundle"]["identities"], default=str))


def test_an_erasure_over_the_api_needs_admin_and_erases(story):
    e = story["api_erase"]
    assert e["sales"].status_code == 403
    assert e["admin"].status_code == 200, e["admin"].text
    assert story["emre_id"] in e["admin"].json()["customer_ids"] and e["admin"].json()["keys_destroyed"] >= 1
    assert e["again"].status_code == 404  # nothing left to erase
    assert story["emre_card"].status_code == 404


def test_an_analysts_export_after_the_erasure_has_placeholders_for_giulia_and_sanne_in_the_clear(story):
    blob = story["exported"].read_bytes()
    assert scan(blob, giulia_values(story)) == []
    assert scan(blob, [story["s"]["email"], story["s"]["text"]])  # opened: the export is readable
    rows = [json.loads(line) for line in blob.decode().splitlines()]
    giulia = [r for r in rows if r["event_id"] in story["accepted"][:3] and r["topic"].endswith("contacts.resolved.v1")]
    # a contact re-keyed by the merge is on contacts.resolved.v1 twice
    assert {r["event_id"] for r in giulia} == set(story["accepted"][:3])
    assert all(r["record"]["metadata"].get("privacy") == "erased" for r in giulia)


def test_a_withdrawal_removes_sanne_from_marketing_segments_and_the_ledger_shows_both_signals(story):
    ledger = story["sanne_ledger"]
    assert "ledger" in ledger, ledger
    assert [(x["granted"], x["event_id"], x["source"]) for x in ledger["ledger"]] == [
        (True, story["accepted"][3], "web_form"),
        (False, story["accepted"][4], "chat"),
    ]
    assert ledger["marketing_withdrawn"] and [x["granted"] for x in ledger["current"]] == [False]
    assert story["sanne_segments"]["segments"] == [] and story["sanne_segments"]["consent"] == "withdrawn"
    assert story["sanne_segments"]["signals"] is None
    assert "consent" not in story["emre_segments"] and story["emre_segments"]["signals"] is not None


def test_the_profile_topic_carries_pseudonyms_that_the_reader_codec_opens(story):
    from schemas.keystore import make_reader_codec

    profiles = [m for m in story["records"][CUSTOMER_PROFILES.name] if m.key == story["sanne_id"].encode()]
    assert profiles and all(m.value for m in profiles)
    assert scan(b"".join(m.value for m in profiles), [story["s"]["email"]]) == []  # not in the clear
    codec = make_reader_codec(story["settings"])
    opened = codec.decode(profiles[-1].value).record
    assert [i["value"] for i in opened["identities"]] == [story["s"]["email"]]
    # Sanne withdrew marketing consent: the profile keeps the consent rows and no sentiment
    assert [(c["purpose"], c["granted"]) for c in opened["consent"]] == [("marketing", False)]
    assert opened["sentiment"]["latest"] is None and opened["sentiment"]["avg_30d"] is None
    # Giulia's profiles: pseudonyms only, then tombstoned by the erasure
    giulia = [m for m in story["records"][CUSTOMER_PROFILES.name] if m.key.decode() in story["report"]["customer_ids"]]
    assert giulia and giulia[-1].value is None


def test_dead_letters_are_sealed_and_the_erasure_destroyed_the_key_of_giulias_only(story):
    from schemas.keystore import make_store
    from schemas.privacy import SEALED_KEY_HEADER, open_payload

    [giulia], [sanne] = story["dead_letters"]["gfav"], story["dead_letters"]["sfav"]
    assert scan(giulia.value + sanne.value, giulia_values(story) + [story["s"]["email"], story["s"]["name"]]) == []
    assert story["report"]["dead_letters"] >= 1
    ring = make_store(story["settings"])
    try:
        tokens = {m.offset: dict(m.headers)[SEALED_KEY_HEADER].decode() for m in (giulia, sanne)}
        keys = ring.resolve(tokens.values())
    finally:
        ring.close()
    assert open_payload(giulia.value, tokens[giulia.offset], keys) is None
    opened = open_payload(sanne.value, tokens[sanne.offset], keys)
    assert opened is not None and story["s"]["email"].encode() in opened


def test_the_workers_dead_letters_are_sealed_and_the_erasure_destroyed_the_key_of_giulias_only(story):
    """streams.dlq.v1: what the worker could not process is sealed under a key of its own, as
    ingest.dlq.v1; erasure reads it (under the worker's topic prefix) and destroys the key of the
    one that names Giulia; Sanne's still opens."""
    from schemas.keystore import make_store
    from schemas.privacy import SEALED_KEY_HEADER, open_payload

    letters = story["records"][story["streams_dlq"]]
    assert len(letters) == story["streams_dlq_count"] == 2
    everyone = giulia_values(story) + [story["s"]["email"], story["s"]["name"]]
    assert scan(b"".join(m.value for m in letters), everyone) == []
    ring = make_store(story["settings"])
    try:
        tokens = {m.offset: dict(m.headers)[SEALED_KEY_HEADER].decode() for m in letters}
        keys = ring.resolve(tokens.values())
    finally:
        ring.close()
    opened = [open_payload(m.value, tokens[m.offset], keys) for m in letters]
    assert sum(o is None for o in opened) == 1, "Giulia's key destroyed, Sanne's kept"
    assert [o for o in opened if o is not None][0].startswith(b'{"note"')
    assert story["s"]["email"].encode() in [o for o in opened if o is not None][0]
    assert story["report"]["dead_letters"] >= 2  # hers on ingest.dlq.v1 and on streams.dlq.v1


def test_a_rebuild_after_the_erasure_equals_the_projection_before_it_minus_the_erased_customers(story):
    before, rebuilt = story["rows_before_minus_erased"], story["rows_rebuilt_minus_erased"]
    assert set(before) == set(rebuilt) and sum(len(r) for r in before.values()) > 10
    assert {t: (len(before[t]), len(rebuilt[t])) for t in before if before[t] != rebuilt[t]} == {}
    assert any(story["s"]["email"] in row for row in before["support.customer_identities"])


def test_marketing_engagement_and_reviews_leave_out_the_customers_who_withdrew_marketing_consent(story):
    # Giulia (by email) and Sanne (by chat, after her web form) withdrew; Emre's review gave no signal
    rows = story["engagement"]["items"]
    assert [(r["channel"], r["contacts"], r["customers"]) for r in rows] == [("review", 1, 1)]
    assert [r["event_id"] for r in story["reviews"]["items"]] == [story["accepted"][5]]


def test_an_analysts_export_pseudonymized_has_no_identity_and_opened_texts(story):
    rows = [json.loads(line) for line in story["analysts"]["pseudonymized"].read_text().splitlines()]
    sanne = [r for r in rows if r["event_id"] == story["accepted"][3]]
    assert sanne and sanne[0]["record"]["text"] == story["s"]["text"]
    blob = story["analysts"]["pseudonymized"].read_bytes()
    assert scan(blob, [story["s"]["email"], story["s"]["name"]]) == []
    assert scan(blob, giulia_values(story)) == []


def test_an_export_for_marketing_leaves_out_the_customers_who_withdrew(story):
    rows = [json.loads(line) for line in story["analysts"]["marketing"].read_text().splitlines()]
    assert story["sanne_id"] not in {r["customer_id"] for r in rows}
    assert not {r["event_id"] for r in rows} & set(story["accepted"][:5])  # Giulia and Sanne withdrew
    assert story["accepted"][5] in {r["event_id"] for r in rows}  # Emre gave no signal


def test_the_identity_stage_applied_the_erasures_tombstones_to_its_own_store(story):
    """The worker that owns the graph holds its tables in local stores; the erasure's tombstones on
    their changelogs reach those stores while it runs (docs/streams.md, "What others write to a
    changelog"): no key the erasure tombstoned is left in them."""
    import orjson

    for topic, keys in story["identity_store_keys"].items():
        tombstoned = {
            orjson.loads(r.key)
            for r in story["records"][topic]
            if r.value is None and "writer" not in dict(r.headers or ())
        }
        assert tombstoned, topic
        assert keys and not tombstoned & keys, (topic, sorted(tombstoned & keys)[:3])
