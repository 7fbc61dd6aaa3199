"""schemas/keystore.py on the real PostgreSQL: one key per subject however many writers create it at
once, destruction, the next generation, and nothing of a value in the clear in the table."""

from __future__ import annotations

import os
import threading
import uuid

import psycopg
import pytest

from schemas.keystore import PostgresKeyRing
from schemas.privacy import MasterKeyWrapper, Pseudonymizer, Subject
from tests.privacy_scan import scan

pytestmark = pytest.mark.integration


@pytest.fixture
def rings(settings):
    wrapper, pseudo = MasterKeyWrapper(os.urandom(32)), Pseudonymizer(os.urandom(32))
    made = [PostgresKeyRing(settings.effective_pg_dsn, wrapper, pseudo) for _ in range(4)]
    yield made
    for r in made:
        r.close()


def test_writers_creating_the_same_subject_at_once_get_one_key(rings):
    subject = Subject("email", f"race.{uuid.uuid4().hex}@example.it")
    got, barrier = [], threading.Barrier(len(rings))

    def create(ring):
        barrier.wait()
        got.append(ring.ensure([subject])[subject])

    threads = [threading.Thread(target=create, args=(r,)) for r in rings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == len(rings) and len({(k.token, k.key) for k in got}) == 1


def test_destroyed_keys_do_not_open_and_the_next_write_is_a_new_generation(rings, settings):
    ring = rings[0]
    value = f"gone.{uuid.uuid4().hex}@example.it"
    subject = Subject("email", value)
    first = ring.ensure([subject])[subject]
    assert ring.resolve([first.token])[first.token].value == value
    assert ring.current_token(subject) == first.token
    assert ring.destroy(ring.tokens_of([subject])) == 1
    assert ring.resolve([first.token]) == {} and ring.current_token(subject) is None
    second = ring.ensure([subject])[subject]
    assert second.token != first.token and second.key != first.key
    assert rings[1].resolve([first.token, second.token]).keys() == {second.token}
    with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as conn:
        rows = conn.execute("select t::text from privacy.data_keys t").fetchall()
    assert scan("\n".join(r[0] for r in rows).encode(), [value]) == []


def test_commands_naming_identities_get_their_live_pseudonym(settings):
    import base64

    from pydantic import SecretStr

    from schemas.keystore import make_store, pseudonymous

    keys = {
        "privacy_master_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
        "privacy_pseudonym_key": SecretStr(base64.b64encode(os.urandom(32)).decode()),
    }
    on = settings.model_copy(update=keys)
    value = f"unlink.{uuid.uuid4().hex}@example.it"
    assert pseudonymous(settings, f"email:{value}") == f"email:{value}"  # privacy off: as given
    never_seen = pseudonymous(on, f"email:{value}")
    assert value not in never_seen and never_seen.startswith("email:")
    store = make_store(on)
    assert store is not None
    try:
        token = store.ensure([Subject("email", value)])[Subject("email", value)].token
    finally:
        store.close()
    assert pseudonymous(on, f"email:{value}") == f"email:{token}" != never_seen


def test_a_key_wrapped_by_another_master_key_is_unopenable_not_an_error(rings, settings):
    """Deployments (or test runs) sharing one database: a token of another master key opens nothing."""
    subject = Subject("dlq", uuid.uuid4().hex)
    theirs = rings[0].ensure([subject])[subject]
    other = PostgresKeyRing(settings.effective_pg_dsn, MasterKeyWrapper(os.urandom(32)), rings[0].pseudonymizer)
    try:
        assert other.resolve([theirs.token]) == {}
    finally:
        other.close()
    assert rings[0].resolve([theirs.token])[theirs.token].value == subject.value
