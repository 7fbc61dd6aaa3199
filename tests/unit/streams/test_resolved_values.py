"""streams/identity_stage.py ResolvedValues: a contact's bytes forwarded to contacts.resolved.v1
with the customer id set without re-encoding, byte for byte what encoding the resolved record
gives, under the resolved topic's own schema id; anything else is encoded the long way."""

from __future__ import annotations

import pytest

import schemas
from connectors.contact import to_record
from schemas.codec import ConfluentCodec, SingleObjectCodec
from streams.identity import resolve
from streams.identity_stage import ResolvedValues

from ..conftest import RECORDED_AT
from ..test_codec import FakeRegistry

CID = "0c6f8a52-3f5e-5b7d-8e21-4d9a6b1c2e3f"


class CountingCodec:
    def __init__(self, codec):
        self.codec, self.encodes = codec, 0

    def encode(self, topic, subject, record):
        self.encodes += 1
        return self.codec.encode(topic, subject, record)

    def decode(self, data):
        return self.codec.decode(data)


@pytest.mark.parametrize(
    "make", [lambda: ConfluentCodec(FakeRegistry()), SingleObjectCodec], ids=["confluent", "single-object"]
)
def test_resolved_bytes_are_the_encoding_of_the_resolved_record_and_only_the_first_is_encoded(make, full_contact):
    codec = CountingCodec(make())
    values = ResolvedValues(codec, "contacts.resolved.v1")
    for i in range(5):
        record = to_record(full_contact.model_copy(update={"provider_id": f"p-{i}", "text": "x" * i}), RECORDED_AT)
        raw = codec.codec.encode("contacts.v1", schemas.CONTACT, record)
        decoded = codec.decode(raw).record
        cid = f"{CID[:-1]}{i}"
        out = values.value(raw, decoded, cid)
        assert out == codec.codec.encode("contacts.resolved.v1", schemas.CONTACT, resolve(decoded, cid))
        assert codec.decode(out).record == resolve(decoded, cid)
    assert codec.encodes == 1  # one encode the long way (the check of this writer schema), the rest patched


def test_a_contact_that_already_has_a_customer_id_is_encoded_the_long_way(full_contact):
    codec = CountingCodec(SingleObjectCodec())
    values = ResolvedValues(codec, "contacts.resolved.v1")
    record = resolve(to_record(full_contact, RECORDED_AT), "someone-else")
    raw = codec.codec.encode("contacts.v1", schemas.CONTACT, record)
    out = values.value(raw, codec.decode(raw).record, CID)
    assert codec.decode(out).record["customer_id"] == CID
    assert codec.encodes == 1


# --- StateTable: the identity stage's tables, held in the process --------------------------------


def test_a_state_table_keeps_what_a_batch_changed_until_taken_and_forgets_everything_when_cleared():
    from streams.identity_stage import StateTable

    table = StateTable("g.changelog")
    assert table.get("n:a") is None and table.get("n:a", {}) == {}
    with pytest.raises(KeyError):
        table["n:a"]
    table["n:a"] = {"x": 1}
    assert table["n:a"] == {"x": 1} and table.take_dirty() == {"n:a": {"x": 1}} and table.take_dirty() == {}
    assert table.get("n:a") == {"x": 1}
    table["n:b"] = {"y": 2}
    table.clear()
    assert len(table) == 0 and table.take_dirty() == {}


def test_the_identity_graph_over_its_graph_table_gives_what_it_gives_over_a_dict(full_contact):
    from streams.identity import IdentityGraph
    from streams.identity_stage import GraphTable

    contacts = []
    for i in range(6):
        c = to_record(full_contact.model_copy(update={"provider_id": f"p-{i}"}), RECORDED_AT)
        c["identities"] = [
            dict(x, value=x["value"].replace("@", f"+{i % 3}@")) if x["kind"] == "email" else x for x in c["identities"]
        ]
        contacts.append(c)
    plain, table = IdentityGraph({}), GraphTable("g.changelog")
    held = IdentityGraph(table)
    with held.batch():
        got = [held.observe(c) for c in contacts]
    want = [plain.observe(c) for c in contacts]
    assert [(g.customer_id, g.events, g.rekeyed) for g in got] == [(w.customer_id, w.events, w.rekeyed) for w in want]
    held_json = {key: record.to_json() for key, record in table.records().items()}
    assert table.take_dirty() == plain.store == held_json


def test_the_contacts_table_writes_a_contacts_bytes_as_they_are_and_reads_the_older_base64_form_too():
    """A changelog record of the contacts' table carries the contact's bytes themselves (no base64
    in a JSON string: a third fewer bytes, no encoding per contact); stores and changelogs written
    before hold the base64 form, which reads back as the same bytes."""
    import base64

    import orjson

    from streams.identity_stage import StateTable, contact_bytes
    from streams.identity_store import MemoryStore

    raw = b"\x00\x00\x00\x00\x07" + bytes(range(256))  # a framed contact's bytes (Confluent's frame)
    single = b"\xc3\x01" + bytes(8) + b'"quoted" body'  # the single-object frame
    table = StateTable("c.changelog")
    table["e-1"], table["e-2"] = raw, single
    items = table.changelog_items()
    assert items == [(b'"e-1"', raw), (b'"e-2"', single)] and table.changelog_items() == []
    store = MemoryStore()
    older = orjson.dumps(base64.b64encode(raw).decode())  # the form written before
    store.write([(b'"e-1"', older), (b'"e-2"', single)], 1, b"w", verified=True)
    again = StateTable("c.changelog", store)
    assert again.get("e-1") == raw and again.get("e-2") == single and again.get("e-3") is None
    assert again.snapshot() == {"e-1": raw, "e-2": single}
    assert contact_bytes(older) == contact_bytes(raw) == raw
