"""The engine's batch decode (projectors/engine/runner.py): the codec's batch hook, then every
record; what a codec's dependency not answering does to a batch. Privacy's opening codec is the
hook's user: one key-store query per polled batch (docs/privacy.md)."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

import schemas
from connectors.contact import ContactIn, to_record
from projectors.contacts import Contacts
from projectors.engine.runner import Projector, decode_batch
from projectors.read_models import read_model_projector
from schemas.codec import SingleObjectCodec
from schemas.keystore import KeyStoreUnavailable, OpeningCodec
from schemas.privacy import ERASED, MasterKeyWrapper, MemoryKeyRing, Pseudonymizer, Subject, seal_contact
from threadline.errors import DecodeError, RegistryUnavailable
from threadline.settings import Settings

from ..conftest import RECORDED_AT, full_contact_payload


@dataclass
class Msg:
    value: bytes
    topic: str = "contacts.resolved.v1"
    partition: int = 0
    offset: int = 0


class CountingRing:
    def __init__(self, ring):
        self.ring, self.calls = ring, 0

    def ensure(self, subjects):
        return self.ring.ensure(subjects)

    def resolve(self, tokens):
        self.calls += 1
        return self.ring.resolve(tokens)


@pytest.fixture
def ring() -> MemoryKeyRing:
    return MemoryKeyRing(Pseudonymizer(b"p" * 32), MasterKeyWrapper(os.urandom(32)))


def sealed_value(ring, i: int) -> bytes:
    rec = to_record(
        ContactIn.model_validate(
            full_contact_payload(
                provider_id=f"p{i}", identities=[{"kind": "email", "value": f"c{i}@example.it", "primary": True}]
            )
        ),
        RECORDED_AT,
    )
    return SingleObjectCodec().encode("contacts.v1", schemas.CONTACT, seal_contact(rec, ring))


def polled_of(values: list[bytes]) -> dict:
    return {("contacts.resolved.v1", 0): [Msg(v, offset=i) for i, v in enumerate(values)]}


def test_a_polled_batch_opens_with_one_key_store_query_erased_records_included(ring):
    values = [sealed_value(ring, i) for i in range(6)]
    ring.destroy(ring.tokens_of(Subject("email", "c0@example.it")))  # c0 erased: two of its records in the batch
    counting = CountingRing(ring)
    now = [0.0]
    opening = OpeningCodec(SingleObjectCodec(), counting, keep=1.0, clock=lambda: now[0])
    out = decode_batch(opening, polled_of([values[0], *values, b"not a record"]))
    assert counting.calls == 1
    texts = [d.record["text"] for _, d, failed in out if failed is None]
    assert texts[:2] == [None, None] and all(t.startswith("Il mio ordine") for t in texts[2:])
    assert all(d.record["metadata"]["privacy"] == ERASED for _, d, f in out[:2])
    [(m, decoded, failed)] = [x for x in out if x[2] is not None]
    assert m.value == b"not a record" and decoded is None and isinstance(failed, DecodeError)
    assert [m.offset for m, _, _ in out] == list(range(8))  # every record, in order


def test_a_prefetch_starts_its_own_window_so_the_batch_after_it_asks_nothing_more(ring):
    values = [sealed_value(ring, i) for i in range(4)]
    counting, now = CountingRing(ring), [0.0]
    opening = OpeningCodec(SingleObjectCodec(), counting, keep=1.0, clock=lambda: now[0])
    opening.decode(values[0])  # a window opened at 0
    now[0] = 0.9
    decode_batch(opening, polled_of(values))  # the batch polled at 0.9, decoded until 1.2
    now[0] = 1.2
    assert [opening.decode(v).record["text"] is not None for v in values] == [True] * 4
    assert counting.calls == 2  # the first decode's, and the batch's


def test_a_codec_whose_dependency_does_not_answer_fails_the_batch_and_pairs_no_record(ring):
    class StoreDown:
        def resolve(self, tokens):
            raise KeyStoreUnavailable("key store (PostgreSQL) did not answer")

    opening = OpeningCodec(SingleObjectCodec(), StoreDown())
    opening._resolve = opening.ring.resolve  # no 15 s of retries here
    with pytest.raises(KeyStoreUnavailable):
        decode_batch(opening, polled_of([sealed_value(ring, 0)]))

    class RegistryDown:
        def decode(self, data):
            raise RegistryUnavailable("the schema registry did not answer")

    with pytest.raises(RegistryUnavailable):
        decode_batch(RegistryDown(), polled_of([b"anything"]))


def privacy_settings() -> Settings:
    key = lambda: SecretStr(base64.b64encode(os.urandom(32)).decode())  # noqa: E731
    return Settings(privacy_master_key=key(), privacy_pseudonym_key=key())


def test_every_projection_of_the_engine_reads_through_the_opening_codec_when_privacy_is_on():
    settings = privacy_settings()
    assert isinstance(Projector(settings, Contacts(), codec=SingleObjectCodec()).codec, OpeningCodec)
    assert isinstance(read_model_projector(settings, "support", codec=SingleObjectCodec()).codec, OpeningCodec)
    assert isinstance(Projector(Settings(), Contacts(), codec=SingleObjectCodec()).codec, SingleObjectCodec)


def test_a_batch_the_key_store_did_not_open_is_read_again_not_dead_lettered():
    projector = Projector(Settings(), Contacts(), codec=SingleObjectCodec())
    calls: list[str] = []

    class Consumer:
        def highwater(self, tp):
            return None

        def poll(self, timeout_ms, max_records):
            return polled_of([b"x"])

    def project(*_args):
        calls.append("project")
        if calls.count("project") == 1:
            raise KeyStoreUnavailable("key store (PostgreSQL) did not answer")
        projector.stop_event.set()

    projector._project = project
    projector._seek_to_stored = lambda conn, consumer, tps: calls.append("seek")
    projector.stop_event.wait = lambda timeout=None: False
    projector._loop(None, Consumer(), None, None, [], None, None, None, None)
    assert calls == ["project", "seek", "project"]


def test_a_prefetched_batch_is_decoded_once(ring):
    class CountingCodec(SingleObjectCodec):
        decodes = 0

        def decode(self, data):
            CountingCodec.decodes += 1
            return super().decode(data)

    values = [sealed_value(ring, i) for i in range(5)]
    out = decode_batch(OpeningCodec(CountingCodec(), ring), polled_of([*values, b"not a record"]))
    assert CountingCodec.decodes == 5 + 2  # the record that does not decode is tried again, to pair its error
    assert all(d.record["text"].startswith("Il mio ordine") for _, d, f in out if f is None)


def test_an_outbox_the_key_store_could_not_pseudonymize_at_start_stays_queued_and_the_projector_runs():
    projector = Projector(Settings(), Contacts(), codec=SingleObjectCodec())

    class Outbox:
        def publish(self, conn, producer):
            raise KeyStoreUnavailable("key store (PostgreSQL) did not answer")

    projector.projection.outbox = Outbox()
    projector.stop_event.set()  # the loop itself: nothing to poll
    projector._loop(None, None, None, None, [], None, None, None, None)  # no exception: published later
