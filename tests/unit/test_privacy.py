"""schemas/privacy.py: sealing a contact, opening it, and what is left when its keys are destroyed."""

from __future__ import annotations

import base64
import io
import json
import os

import fastavro
import pytest

import schemas
from connectors.contact import ContactIn, partition_key, to_record
from schemas.codec import SingleObjectCodec
from schemas.privacy import (
    CONTACT_FULLNAME,
    ERASED,
    IDENTITY_EVENT_FULLNAME,
    MasterKeyWrapper,
    MemoryKeyRing,
    Pseudonymizer,
    Subject,
    decode_key,
    is_pseudonym,
    open_one,
    open_record,
    parse_identity,
    record_key,
    seal_contact,
    tokens_in,
)
from tests.privacy_scan import needles, scan

from .conftest import RECORDED_AT, full_contact_payload

PERSONAL = [
    "giulia.rossi@example.it",
    "+393471234567",
    "giuliar",
    "Ordine arrivato rotto",
    "Il mio ordine è arrivato rotto",
    "Giulia",
    "foto.jpg",
    "https://files.example/foto.jpg",
    "4711",
]


@pytest.fixture
def ring() -> MemoryKeyRing:
    return MemoryKeyRing(Pseudonymizer(b"p" * 32), MasterKeyWrapper(os.urandom(32)))


def record(**overrides) -> dict:
    return to_record(ContactIn.model_validate(full_contact_payload(**overrides)), RECORDED_AT)


def encoded(rec: dict) -> bytes:
    return SingleObjectCodec().encode("contacts.v1", schemas.CONTACT, rec)


def test_a_sealed_contact_has_no_personal_value_in_its_bytes_or_key(ring):
    plain = record()
    sealed = seal_contact(plain, ring)
    assert scan(encoded(plain), PERSONAL)  # the scan finds them in a contact in the clear
    assert scan(encoded(sealed), PERSONAL) == []
    assert scan(record_key(sealed), PERSONAL) == []
    assert record_key(plain) == partition_key(ContactIn.model_validate(full_contact_payload()))


def test_sealed_then_opened_is_the_record_in_the_clear(ring):
    plain = record()
    decoded = SingleObjectCodec().decode(encoded(seal_contact(plain, ring)))
    opened = open_one(decoded.schema_fullname, decoded.record, ring)
    expected = SingleObjectCodec().decode(encoded(plain)).record
    assert opened == expected


def test_pseudonyms_are_stable_per_subject_and_keep_the_identity_rules_shape(ring):
    a, b = seal_contact(record(), ring), seal_contact(record(provider_id="other"), ring)
    assert [i["value"] for i in a["identities"]] == [i["value"] for i in b["identities"]]
    email, phone, social = (i["value"] for i in a["identities"])
    assert email.endswith("@pseudonym.invalid") and "@" in email
    assert phone.startswith("+000") and len(set(phone[1:])) > 1 and len(phone) == 16
    assert social.startswith("~")
    assert all(is_pseudonym(v) for v in (email, phone, social, a["facts"][0]["value"]))
    assert not is_pseudonym("+393471234567") and not is_pseudonym("giulia.rossi@example.it")


def test_facts_are_pseudonymised_case_insensitively_so_they_still_link(ring):
    a = seal_contact(record(facts=[{"kind": "order_number", "value": "ORD-9", "source": "text"}]), ring)
    b = seal_contact(record(provider_id="x", facts=[{"kind": "order_number", "value": " ord-9", "source": "t"}]), ring)
    assert a["facts"][0]["value"] == b["facts"][0]["value"]


def test_destroyed_keys_leave_the_documented_placeholder_and_the_record_keeps_its_shape(ring):
    sealed = seal_contact(record(), ring)
    ring.destroy(ring.tokens_of(Subject("phone", "+393471234567")))
    opened = open_one(CONTACT_FULLNAME, sealed, ring)
    assert opened["metadata"]["privacy"] == ERASED
    assert opened["text"] is None and opened["subject"] is None and opened["actor"]["display_name"] is None
    assert opened["attachments"][0]["name"] is None and opened["attachments"][0]["size_bytes"] == 20480
    # the phone's value stays its pseudonym; the others still open
    values = [i["value"] for i in opened["identities"]]
    assert values[0] == "giulia.rossi@example.it" and is_pseudonym(values[1]) and values[2] == "giuliar"
    assert opened["channel"] == "voice" and opened["occurred_at"] == sealed["occurred_at"]
    assert scan(json.dumps(opened, default=str).encode(), ["+393471234567", "Il mio ordine", "Giulia "]) == []
    SingleObjectCodec().encode("contacts.v1", schemas.CONTACT, opened)  # still a valid record


def test_an_erased_subject_writing_again_gets_a_new_pseudonym_and_key(ring):
    first = seal_contact(record(), ring)
    ring.destroy(ring.tokens_of(Subject("phone", "+393471234567")))
    again = seal_contact(record(provider_id="later"), ring)
    assert first["identities"][1]["value"] != again["identities"][1]["value"]
    assert first["identities"][0]["value"] == again["identities"][0]["value"]  # the email was not erased
    assert open_one(CONTACT_FULLNAME, again, ring)["text"] == "Il mio ordine è arrivato rotto, numero 4711."
    assert open_one(CONTACT_FULLNAME, first, ring)["text"] is None


def test_a_v1_record_in_the_clear_still_decodes_and_opens_as_it_is(ring):
    v1 = schemas.versions(schemas.CONTACT)[0]
    assert v1.version == 1
    plain = record()
    plain.pop("sealed", None)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1.parsed, plain)
    frame = b"\xc3\x01" + SingleObjectCodec.fingerprint(v1.parsed) + buf.getvalue()
    decoded = SingleObjectCodec().decode(frame)
    assert decoded.record["sealed"] is None
    assert open_one(decoded.schema_fullname, decoded.record, ring) == decoded.record
    assert tokens_in(decoded.schema_fullname, decoded.record) == set()


def test_identity_events_open_their_pseudonyms(ring):
    sealed = seal_contact(record(), ring)
    event = {
        "event_id": "e",
        "customer_id": "c",
        "identities": [
            {"kind": i["kind"], "value": i["value"], "platform": i.get("platform")} for i in sealed["identities"]
        ],
    }
    opened = open_one(IDENTITY_EVENT_FULLNAME, event, ring)
    assert [i["value"] for i in opened["identities"]] == ["giulia.rossi@example.it", "+393471234567", "giuliar"]


def test_a_tampered_ciphertext_opens_as_erased_not_as_an_error(ring):
    sealed = seal_contact(record(), ring)
    bad = dict(sealed, sealed=dict(sealed["sealed"], ciphertext=b"x" + bytes(sealed["sealed"]["ciphertext"])[1:]))
    assert open_record(CONTACT_FULLNAME, bad, ring.resolve(tokens_in(CONTACT_FULLNAME, bad)))["text"] is None


def test_a_contact_without_identities_is_sealed_under_a_key_of_its_own(ring):
    sealed = seal_contact(dict(record(), identities=[]), ring)  # the gateway refuses these; importers could not
    assert sealed["text"] is None and record_key(sealed).startswith(b"event:")
    assert open_one(CONTACT_FULLNAME, sealed, ring)["text"].startswith("Il mio ordine")


def test_wrapped_keys_do_not_unwrap_under_another_context_or_master():
    w = MasterKeyWrapper(os.urandom(32))
    blob = w.wrap(b"k" * 32, b"token-a")
    assert w.unwrap(blob, b"token-a") == b"k" * 32
    with pytest.raises(Exception):
        w.unwrap(blob, b"token-b")
    with pytest.raises(Exception):
        MasterKeyWrapper(os.urandom(32)).unwrap(blob, b"token-a")


def test_keys_from_settings_text():
    raw = os.urandom(32)
    assert decode_key(base64.b64encode(raw).decode(), "x") == raw
    assert decode_key(raw.hex(), "x") == raw
    with pytest.raises(ValueError, match="THREADLINE_PRIVACY_MASTER_KEY"):
        decode_key("short", "THREADLINE_PRIVACY_MASTER_KEY")


def test_parse_identity():
    assert parse_identity("email:a@b.it") == Subject("email", "a@b.it")
    assert parse_identity("social:twitter:giuliar") == Subject("social", "giuliar", "twitter")
    with pytest.raises(ValueError):
        parse_identity("nokind")


def test_the_scan_helper_finds_common_encodings():
    value = "giulia.rossi@example.it"
    for prefix in (b"", b"a", b"ab"):
        assert scan(base64.b64encode(prefix + value.encode() + b"tail"), [value]) == [(value, "base64")]
    assert scan(value.encode("utf-16-le"), [value]) == [(value, "utf-16-le")]
    assert scan(b"x=giulia.rossi%40example.it", [value]) == [(value, "url")]
    assert scan(value.encode().hex().encode(), [value]) == [(value, "hex")]
    assert scan(json.dumps("Il mio ordine è").encode(), ["ordine è"]) == [("ordine è", "json-ascii")]
    assert len(needles(value)["base64"]) >= 3


# --- the edges: the gateway's cache and the sink ------------------------------------------------


class CountingRing:
    def __init__(self, ring):
        self.ring, self.calls = ring, 0

    def ensure(self, subjects):
        self.calls += 1
        return self.ring.ensure(subjects)

    def resolve(self, tokens):
        return self.ring.resolve(tokens)


def test_the_gateway_cache_asks_the_store_once_per_ttl_and_never_caches_opening(ring):
    from schemas.keystore import CachedKeyRing

    now = [0.0]
    counting = CountingRing(ring)
    cached = CachedKeyRing(counting, ttl=30, clock=lambda: now[0])
    subjects = [Subject("email", "a@b.it")]
    assert not cached.cached(subjects)
    first = cached.ensure(subjects)
    assert cached.ensure(subjects) == first and counting.calls == 1 and cached.cached(subjects)
    now[0] = 31
    assert not cached.cached(subjects)
    cached.ensure(subjects)
    assert counting.calls == 2
    ring.destroy([first[subjects[0]].token])
    assert cached.resolve([first[subjects[0]].token]) == {}  # a destroyed key never opens from memory


class FakeProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, headers))


def test_the_sink_seals_before_producing_and_keys_by_pseudonym(ring):
    from connectors.sink import Sink

    producer = FakeProducer()
    sink = Sink(producer, SingleObjectCodec(), keyring=ring, component="import")
    sink.send(ContactIn.model_validate(full_contact_payload()))
    [(topic, key, value, headers)] = producer.sent
    assert topic == "contacts.v1"
    assert scan(key, PERSONAL) == [] and scan(value, PERSONAL) == [] and scan(repr(headers).encode(), PERSONAL) == []
    decoded = SingleObjectCodec().decode(value)
    assert open_one(decoded.schema_fullname, decoded.record, ring)["text"].startswith("Il mio ordine")
    assert key.startswith(b"phone:+000")


def test_the_sink_seals_in_a_thread_when_the_store_must_be_asked(ring):
    import asyncio

    from connectors.sink import Sink
    from schemas.keystore import CachedKeyRing

    cached = CachedKeyRing(ring, ttl=30)
    sink = Sink(None, SingleObjectCodec(), keyring=cached)
    contacts = [ContactIn.model_validate(full_contact_payload())]
    assert sink._needs_store(contacts, RECORDED_AT)
    [(key, value, _)] = asyncio.run(sink.encode_all(contacts, RECORDED_AT))
    assert not sink._needs_store(contacts, RECORDED_AT)
    assert scan(value, PERSONAL) == []


def test_facts_open_as_written_from_the_contact_and_normalised_elsewhere(ring):
    sealed = seal_contact(record(facts=[{"kind": "order_number", "value": "ORD-9", "source": "text"}]), ring)
    assert open_one(CONTACT_FULLNAME, sealed, ring)["facts"][0]["value"] == "ORD-9"
    event = {"event_id": "e", "facts": [{"kind": "order_number", "value": sealed["facts"][0]["value"], "source": None}]}
    assert open_one("threadline.conversation.ConversationEvent", event, ring)["facts"][0]["value"] == "ord-9"


def test_the_opening_codec_prefetches_a_batch_in_one_query_and_forgets_keys_after_keep(ring):
    from schemas.keystore import OpeningCodec

    class Counting:
        def __init__(self):
            self.calls = 0

        def ensure(self, subjects):
            return ring.ensure(subjects)

        def resolve(self, tokens):
            self.calls += 1
            return ring.resolve(tokens)

    codec, counting, now = SingleObjectCodec(), Counting(), [0.0]
    values = [
        encoded(
            seal_contact(
                record(
                    provider_id=f"p{i}", identities=[{"kind": "email", "value": f"c{i}@example.it", "primary": True}]
                ),
                ring,
            )
        )
        for i in range(5)
    ]
    opening = OpeningCodec(codec, counting, keep=1.0, clock=lambda: now[0])
    assert opening.prefetch(values + [b"not a record"]) == 5 + 1  # five identities, one order number
    texts = [opening.decode(v).record["text"] for v in values]
    assert counting.calls == 1 and all(t.startswith("Il mio ordine") for t in texts)
    ring.destroy(ring.tokens_of(Subject("email", "c0@example.it")))
    now[0] = 1.5  # past keep: the destroyed key is not opened from memory
    assert opening.decode(values[0]).record["text"] is None


def test_privacy_commands_name_bad_input_and_privacy_off_with_exit_2(monkeypatch, restore_logging):
    from typer.testing import CliRunner

    from threadline.tools.cli import app

    for name in ("THREADLINE_PRIVACY_MASTER_KEY", "THREADLINE_PRIVACY_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    bad = runner.invoke(app, ["privacy", "erase", "--identity", "nokind"])
    assert bad.exit_code == 2 and "kind:value" in bad.output
    off = runner.invoke(app, ["privacy", "erase", "--identity", "email:a@b.it"])
    assert off.exit_code == 2 and "THREADLINE_PRIVACY_MASTER_KEY" in off.output
    monkeypatch.setenv("THREADLINE_PRIVACY_MASTER_KEY", "short")
    monkeypatch.setenv("THREADLINE_PRIVACY_PSEUDONYM_KEY", base64.b64encode(os.urandom(32)).decode())
    wrong = runner.invoke(app, ["privacy", "erase", "--identity", "email:a@b.it"])
    assert wrong.exit_code == 2 and "32 random bytes" in wrong.output


# -- dead letters --------------------------------------------------------------------------------------

REJECTED = json.dumps({"favorite_events": [{"user": {"name": "Giulia", "email": "giulia.rossi@example.it"}}]}).encode()


def test_a_rejected_payload_goes_to_the_dlq_sealed_under_a_key_of_its_own(ring):
    import asyncio

    from connectors.base import Rejected
    from schemas.privacy import SEALED_KEY_HEADER, open_payload

    producer = FakeProducer()
    sink = Sink_(producer, ring)
    sink.send_dead_letter("x", Rejected("unsupported x event: favorite_events", REJECTED, "favorite_events"))
    [(topic, key, value, headers)] = producer.sent
    headers = {k: v.decode() for k, v in headers}
    assert topic == "ingest.dlq.v1" and key == b"x" and headers["reason"].startswith("unsupported")
    assert scan(value, PERSONAL) == [] and scan(repr(headers).encode(), PERSONAL) == []
    token = headers[SEALED_KEY_HEADER]
    assert open_payload(value, token, ring.resolve([token])) == REJECTED

    class Async:
        def __init__(self):
            self.sent = []

        async def send(self, topic, key=None, value=None, headers=None):
            self.sent.append((value, headers))
            return topic

    gateway = Sink_(Async(), ring)
    asyncio.run(gateway.publish("x", [], [Rejected("no *_events in the payload", REJECTED)]))
    [(value, headers)] = gateway.producer.sent
    assert scan(value, PERSONAL) == []
    assert open_payload(value, headers[SEALED_KEY_HEADER], ring.resolve([headers[SEALED_KEY_HEADER]])) == REJECTED
    # privacy off: the raw bytes as they came
    plain = FakeProducer()
    Sink_(plain, None).send_dead_letter("x", Rejected("r", REJECTED))
    assert plain.sent[0][2] == REJECTED and "sealed_key" not in dict(plain.sent[0][3])


def Sink_(producer, keyring):
    from connectors.sink import Sink

    return Sink(producer, SingleObjectCodec(), keyring=keyring, component="gateway")


def test_a_record_read_from_a_topic_is_dead_lettered_sealed_when_a_seal_is_given(ring):
    from schemas.privacy import SEALED_KEY_HEADER, open_payload, seal_payload
    from threadline.dlq import DeadLetters

    producer = FakeProducer()
    DeadLetters(producer, "projections.dlq.v1", "support", seal=lambda raw: seal_payload(raw, ring)).send(
        topic="contacts.resolved.v1", partition=0, offset=7, value=REJECTED, reason="bad: x"
    )
    [(_, _, value, headers)] = producer.sent
    token = dict(headers)[SEALED_KEY_HEADER].decode()
    assert scan(value, PERSONAL) == [] and open_payload(value, token, ring.resolve([token])) == REJECTED


def test_erasure_finds_the_dead_letters_that_mention_the_customer_and_only_those(ring):
    from projectors.erasure import Component, dead_letters_of
    from schemas.privacy import open_payload, seal_payload

    theirs = [
        REJECTED,  # JSON, as written
        b"From=%2B393471234567&Body=ciao",  # a form post: the phone URL-encoded
        b'{"orders": ["ORD-9"]}',  # the order number, in another case than the key store's
    ]
    other = b'{"email": "sanne@example.nl"}'
    letters = [seal_payload(raw, ring) for raw in [*theirs, other]]
    pairs = [(v, h["sealed_key"]) for v, h in letters]
    comp = Component(
        ("c1",),
        (Subject("email", "giulia.rossi@example.it"), Subject("phone", "+393471234567")),
        (Subject("fact:order_number", "ord-9"),),
        (),
        (),
    )
    found = dead_letters_of(comp, ring, pairs)
    assert found == sorted(t for _, t in pairs[:3])
    ring.destroy(found)
    assert [open_payload(v, t, ring.resolve([t])) for v, t in pairs] == [None, None, None, other]
    assert dead_letters_of(comp, ring, pairs) == []  # nothing left to find


def _giulia():
    from projectors.erasure import Component

    return Component(
        ("c1",),
        (Subject("email", "giulia.rossi@example.it"), Subject("phone", "+393471234567")),
        (Subject("fact:order_number", "ord-9"),),
        (),
        (),
    )


def _letters(ring, raws):
    from schemas.privacy import seal_payload

    return [(v, h["sealed_key"]) for v, h in (seal_payload(raw, ring) for raw in raws)]


def test_erasure_finds_dead_letters_that_write_the_customers_phone_another_way(ring):
    """Phones as people and providers write them: spaces, dashes, national format (the ingest
    region's), a 00 prefix, in a form post; normalized with ingest's phones_in_text."""
    from projectors.erasure import dead_letters_of

    theirs = [
        b'{"from": "+39 347 123 4567", "text": "ciao"}',
        b'{"note": "call me on 347-123-4567 please"}',  # national format, region IT
        b"From=%2B39+347+123+4567&Body=ciao",  # a form post, spaced and URL-encoded
        b'{"phone": "0039 347 1234567"}',
        b'{"phone": "(347) 123.4567"}',
    ]
    others = [b'{"from": "+39 347 765 4321"}', b'{"note": "call 347 123 4568"}', b'{"id": 3471234567000}']
    pairs = _letters(ring, [*theirs, *others])
    assert dead_letters_of(_giulia(), ring, pairs) == sorted(t for _, t in pairs[: len(theirs)])
    # another region reads the national form as another number
    national = _letters(ring, [theirs[1]])
    assert dead_letters_of(_giulia(), ring, national, region="NL") == []


def test_erasure_finds_the_workers_dead_letters_of_sealed_contacts_by_their_pseudonyms(ring):
    """streams.dlq.v1 holds contacts.v1's bytes as the worker read them: sealed by the gateway, so
    pseudonyms, not values. Erasure matches those against the customer's tokens."""
    from projectors.erasure import dead_letters_of

    sealed = encoded(seal_contact(record(), ring))
    other = encoded(seal_contact(record(identities=[{"kind": "email", "value": "sanne@example.nl"}]), ring))
    pairs = _letters(ring, [sealed, other])
    comp = _giulia()
    assert dead_letters_of(comp, ring, pairs) == []  # by the values alone: not found
    tokens = [t for s in comp.identities for t in ring.tokens_of(s)]
    assert tokens and dead_letters_of(comp, ring, pairs, tokens) == [pairs[0][1]]


class _Message:
    def __init__(self, topic, partition, offset):
        self.topic, self.partition, self.offset = topic, partition, offset


class _Event:
    def __init__(self, value, offset=5):
        self.value, self.message = value, _Message("contacts.v1", 2, offset)


def test_the_workers_dead_letters_are_sealed_like_ingests_when_privacy_is_on(ring):
    """streams/stage.StageContext: a record the worker cannot process goes to streams.dlq.v1
    sealed under a key of its own (schemas.privacy.seal_payload, the seal of ingest.dlq.v1), the
    reason and where it was read in headers; the key store down is waited for, never skipped."""
    import asyncio

    from schemas.keystore import KeyStoreUnavailable
    from schemas.privacy import SEALED_KEY_HEADER, open_payload, seal_payload
    from streams.stage import Outputs, StageContext

    raw = b'{"from": "giulia.rossi@example.it", "text": "Il mio ordine \xc3\xa8 arrivato rotto"}'
    calls = []

    def seal(value):
        calls.append(value)
        if len(calls) == 1:
            raise KeyStoreUnavailable("down a moment")
        return seal_payload(value, ring)

    ctx = StageContext(None, "threadline-streams", "streams.dlq.v1", seal=seal)
    out = Outputs()
    out.add("contacts.resolved.v1", b"k", b"kept as is")
    ctx.to_dlq(out, _Event(raw), "ValueError: a contact without identities cannot be resolved")
    asyncio.run(ctx._seal(out))
    assert out.records[0] == ("contacts.resolved.v1", b"k", b"kept as is", None, None)
    topic, key, value, headers, _ = out.records[1]
    assert (topic, key) == ("streams.dlq.v1", b"contacts.v1") and len(calls) == 2
    assert scan(value, PERSONAL) == [] and scan(repr(headers).encode(), PERSONAL) == []
    assert headers["source_offset"] == "5" and headers["reason"].startswith("ValueError")
    token = headers[SEALED_KEY_HEADER]
    assert open_payload(value, token, ring.resolve([token])) == raw
    # privacy off: the bytes as read
    plain = StageContext(None, "threadline-streams", "streams.dlq.v1")
    out = Outputs()
    plain.to_dlq(out, _Event(raw), "bad")
    assert out.records[0][2] == raw and out.unsealed == [] and SEALED_KEY_HEADER not in out.records[0][3]


def test_message_ids_travel_as_macs_that_still_thread_a_reply_and_open_to_the_originals(ring):
    from streams.conversations import view

    mid = "<CAF42.giulia.rossi@mail.example.it>"
    original = record(provider_id=mid, thread={"message_id": mid})
    reply = record(provider_id="<r1@shop.example>", thread={"in_reply_to": mid, "references": [mid, "<x@y.it>"]})
    a, b = seal_contact(original, ring), seal_contact(reply, ring)
    assert scan(encoded(a) + encoded(b), [mid, "giulia.rossi", "r1@shop.example", "x@y.it"]) == []
    # the stream worker threads the reply on the MACs as it did on the values
    assert view(b).refs[0] in view(a).message_ids and view(b).refs[0] != mid
    assert open_one(CONTACT_FULLNAME, a, ring)["thread"]["message_id"] == mid
    opened = open_one(CONTACT_FULLNAME, b, ring)
    assert opened["thread"]["references"] == [mid, "<x@y.it>"] and opened["provider_id"] == "<r1@shop.example>"
    ring.destroy(ring.tokens_of(identity_of(reply)))  # erased: the MACs stay, nothing to open them
    erased = open_one(CONTACT_FULLNAME, b, ring)
    assert erased["metadata"]["privacy"] == ERASED and erased["thread"] == b["thread"]


def identity_of(rec: dict) -> Subject:
    from schemas.privacy import identity_subject

    primary = next(i for i in rec["identities"] if i.get("primary"))
    return identity_subject(primary)


def test_a_pseudonymised_record_keeps_the_logs_pseudonyms_and_opens_the_rest(ring):
    from schemas.privacy import pseudonymized

    plain = record(thread={"message_id": "<m1@giulia.example.it>"})
    sealed = seal_contact(plain, ring)
    out = pseudonymized(open_one(CONTACT_FULLNAME, sealed, ring), sealed)
    assert out["text"] == plain["text"] and out["subject"] == plain["subject"]  # opened
    assert out["identities"] == sealed["identities"] and out["facts"] == sealed["facts"]
    assert out["actor"]["display_name"] is None and out["provider_id"] == sealed["provider_id"]
    assert scan(json.dumps(out, default=str).encode(), ["giulia.rossi@example.it", "+393471234567", "giuliar"]) == []
