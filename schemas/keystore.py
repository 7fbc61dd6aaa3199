"""The key store of crypto-shredding: a PostgreSQL table, and the one place privacy is wired.

``privacy.data_keys`` holds, per subject (``lookup_ref``: keyed HMAC of the identity) and
generation, the pseudonym (``token``), the data key wrapped by the master key (``KeyWrapper``:
a master key from settings today, a KMS tomorrow) and the subject's value encrypted under that
data key. Destroying a key blanks ``wrapped_key`` and ``sealed_value`` (then VACUUM); the row keeps
``lookup_ref`` and ``generation`` so the next write of that subject starts the next generation
(a new pseudonym: a new customer). Why PostgreSQL and not a compacted topic: docs/privacy.md.

``make_keyring(settings)`` is the wiring: None when THREADLINE_PRIVACY_MASTER_KEY is unset
(contacts are written in the clear, as contact v1 was), else a ``PostgresKeyRing`` on the
key-store role (THREADLINE_PG_KEYSTORE_DSN; unset, THREADLINE_PG_DSN), with the gateway's cache
in front (``CachedKeyRing``). The owner makes the table (``create_store``, the projector at start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.identities import DEFAULT_BLOCKED, blocked_words
from schemas.privacy import (
    DataKey,
    KeyRing,
    KeyWrapper,
    MasterKeyWrapper,
    Opened,
    Pseudonymizer,
    Subject,
    decode_key,
    open_value,
    seal_value,
)
from threadline.errors import ConfigError, RetryableError

if TYPE_CHECKING:
    from schemas.codec import Decoded

SCHEMA = "privacy"
DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.data_keys (
    lookup_ref text not null,
    generation integer not null,
    token text not null unique,
    kind text not null,
    wrapper_key_id text,
    wrapped_key bytea,
    sealed_value bytea,
    created_at timestamptz not null default now(),
    destroyed_at timestamptz,
    primary key (lookup_ref, generation)
);
"""


class KeyStoreUnavailable(RetryableError):
    pass


class PostgresKeyRing:
    """``KeyRing`` on PostgreSQL. One connection, used under a lock (the gateway calls it from
    worker threads); a broken connection is replaced on the next call."""

    def __init__(self, dsn: str, wrapper: KeyWrapper, pseudonymizer: Pseudonymizer, *, create: bool = True):
        self.dsn, self.wrapper, self.pseudonymizer = dsn, wrapper, pseudonymizer
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._create = create

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True, application_name="threadline-keystore")
            except psycopg.OperationalError as exc:
                raise KeyStoreUnavailable(f"key store (PostgreSQL) did not answer: {exc}") from exc
            if self._create:
                self._create_table(self._conn)
                self._create = False
        return self._conn

    def _create_table(self, conn: psycopg.Connection) -> None:
        """The table, unless it is there: the key-store role of the gateway and the worker may not
        create it (least privilege), the owner (the projector, at start: ``create_store``) does."""
        try:
            row = conn.execute(f"select to_regclass('{SCHEMA}.data_keys') is not null").fetchone()
            if row is not None and row[0]:
                return
            # "if not exists" is not safe against a concurrent create: the first users of a
            # fresh database (gateway threads, projectors) take turns
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(hashtext('threadline:privacy-ddl'))")
                conn.execute(DDL)
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.close()
            self._conn = None
            raise KeyStoreUnavailable(
                f"the key store {SCHEMA}.data_keys does not exist yet or this role may not use it: "
                "the projector (the database's owner) creates it when it starts (docs/privacy.md)"
            ) from exc

    def _run(self, fn: Callable[[psycopg.Connection], object]):
        with self._lock:
            try:
                return fn(self._connection())
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise KeyStoreUnavailable(f"key store (PostgreSQL) failed: {exc}") from exc
            except psycopg.errors.InsufficientPrivilege as exc:  # grants being fixed: retried, never a 500
                raise KeyStoreUnavailable(
                    f"this role may not use the key store {SCHEMA}.data_keys (docs/operations.md, "
                    f'"Database roles"): {exc}'
                ) from exc

    def ensure(self, subjects: Sequence[Subject]) -> dict[Subject, DataKey]:
        refs = {s: self.pseudonymizer.lookup_ref(s) for s in subjects}

        def latest(conn) -> dict[str, tuple[int, str, bytes | None]]:
            rows = conn.execute(
                f"select distinct on (lookup_ref) lookup_ref, generation, token, wrapped_key from {SCHEMA}.data_keys"
                " where lookup_ref = any(%s) order by lookup_ref, generation desc",
                (list(refs.values()),),
            ).fetchall()
            return {r[0]: (r[1], r[2], r[3]) for r in rows}

        def go(conn) -> dict[Subject, DataKey]:
            have = latest(conn)
            missing = [s for s, ref in refs.items() if ref not in have or have[ref][2] is None]
            if missing:
                with conn.cursor() as cur:
                    rows = []
                    for s in missing:
                        generation = have[refs[s]][0] + 1 if refs[s] in have else 0
                        token = self.pseudonymizer.token(s, generation)
                        key = AESGCM.generate_key(bit_length=256)
                        rows.append(
                            (
                                refs[s],
                                generation,
                                token,
                                s.kind,
                                self.wrapper.key_id,
                                self.wrapper.wrap(key, token.encode()),
                                seal_value(key, s.value, token.encode()),
                            )
                        )
                    # two writers creating the same generation at once: the first insert wins, both read it back
                    # (no arbiter: the token, made from the subject and generation, is unique too, and a
                    # racing insert may meet its index first)
                    cur.executemany(
                        f"insert into {SCHEMA}.data_keys (lookup_ref, generation, token, kind, wrapper_key_id,"
                        " wrapped_key, sealed_value) values (%s, %s, %s, %s, %s, %s, %s)"
                        " on conflict do nothing",
                        rows,
                    )
                have = latest(conn)
            out = {}
            for s, ref in refs.items():
                _, token, wrapped = have[ref]
                if wrapped is None:  # destroyed between the insert and the read: a concurrent erasure
                    raise KeyStoreUnavailable("a data key was destroyed while it was being created; retry")
                out[s] = DataKey(token, self.wrapper.unwrap(bytes(wrapped), token.encode()))
            return out

        return self._run(go)

    def resolve(self, tokens: Iterable[str]) -> dict[str, Opened]:
        wanted = sorted(set(tokens))
        if not wanted:
            return {}

        def go(conn) -> dict[str, Opened]:
            rows = conn.execute(
                f"select token, wrapped_key, sealed_value from {SCHEMA}.data_keys"
                " where token = any(%s) and wrapped_key is not null",
                (wanted,),
            ).fetchall()
            out = {}
            for token, wrapped, blob in rows:
                try:
                    key = self.wrapper.unwrap(bytes(wrapped), token.encode())
                except InvalidTag:  # wrapped by another master key (a token of another deployment): unopenable
                    continue
                value = open_value(key, bytes(blob), token.encode())
                if value is not None:
                    out[token] = Opened(key, value)
            return out

        return self._run(go)

    def tokens_of(self, subjects: Iterable[Subject]) -> list[str]:
        """Every generation's token of the subjects, destroyed ones included."""
        refs = sorted({self.pseudonymizer.lookup_ref(s) for s in subjects})
        if not refs:
            return []
        return self._run(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    f"select token from {SCHEMA}.data_keys where lookup_ref = any(%s) order by token", (refs,)
                ).fetchall()
            ]
        )

    def current_tokens(self, subjects: Iterable[Subject]) -> dict[Subject, str]:
        """The live token of each subject that has one (one query); never creates a key, so a
        subject erased meanwhile is not given a new one."""
        refs = {self.pseudonymizer.lookup_ref(s): s for s in subjects}
        if not refs:
            return {}
        rows = self._run(
            lambda conn: conn.execute(
                f"select distinct on (lookup_ref) lookup_ref, token, wrapped_key is not null from {SCHEMA}.data_keys"
                " where lookup_ref = any(%s) order by lookup_ref, generation desc",
                (sorted(refs),),
            ).fetchall()
        )
        return {refs[ref]: token for ref, token, live in rows if live}

    def current_token(self, subject: Subject) -> str | None:
        """The live token of a subject, None when it has none (never seen, or erased)."""
        ref = self.pseudonymizer.lookup_ref(subject)
        row = self._run(
            lambda conn: conn.execute(
                f"select token from {SCHEMA}.data_keys where lookup_ref = %s and wrapped_key is not null"
                " order by generation desc limit 1",
                (ref,),
            ).fetchone()
        )
        return row[0] if row else None

    def destroy(self, tokens: Iterable[str]) -> int:
        """Blank the wrapped keys and values of ``tokens``, then VACUUM the table so the old row
        versions go too. Returns how many live keys were destroyed."""
        wanted = sorted(set(tokens))
        if not wanted:
            return 0

        def go(conn) -> int:
            n = conn.execute(
                f"update {SCHEMA}.data_keys set wrapped_key = null, sealed_value = null,"
                " wrapper_key_id = null, destroyed_at = now() where token = any(%s)"
                " and wrapped_key is not null",
                (wanted,),
            ).rowcount
            conn.execute(f"vacuum {SCHEMA}.data_keys")
            return n

        return self._run(go)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


class CachedKeyRing:
    """``ensure`` answers from memory for ``ttl`` seconds (the gateway: one key-store round trip
    per identity per ttl, not per contact); ``resolve`` always asks the store, so a destroyed key
    is never opened from a cache. A contact written within ``ttl`` after its customer's erasure is
    sealed under the destroyed key: it opens as erased (docs/privacy.md)."""

    def __init__(
        self, ring: KeyRing, ttl: float, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000
    ):
        self.ring, self.ttl, self.clock, self.max_entries = ring, ttl, clock, max_entries
        self._cache: dict[Subject, tuple[float, DataKey]] = {}

    def ensure(self, subjects: Sequence[Subject]) -> dict[Subject, DataKey]:
        now = self.clock()
        out, missing = {}, []
        for s in subjects:
            hit = self._cache.get(s)
            if hit is not None and now - hit[0] < self.ttl:
                out[s] = hit[1]
            else:
                missing.append(s)
        if missing:
            fetched = self.ring.ensure(missing)
            if len(self._cache) + len(fetched) > self.max_entries:
                self._cache.clear()
            for s, k in fetched.items():
                self._cache[s] = (now, k)
            out.update(fetched)
        return out

    @property
    def pseudonymizer(self) -> Pseudonymizer | None:
        return getattr(self.ring, "pseudonymizer", None)

    def cached(self, subjects: Sequence[Subject]) -> bool:
        """Whether ``ensure`` of these answers without the store (the gateway then stays on its loop)."""
        now = self.clock()
        return all((hit := self._cache.get(s)) is not None and now - hit[0] < self.ttl for s in subjects)

    def resolve(self, tokens: Iterable[str]) -> dict[str, Opened]:
        return self.ring.resolve(tokens)


def pseudonymizer_from(settings) -> Pseudonymizer:
    from threadline.secrets import secret

    text = secret(settings.privacy, "pseudonym_key")
    if text is None:
        raise ConfigError(
            "THREADLINE_PRIVACY_PSEUDONYM_KEY (or _FILE) is unset: it is needed with "
            "THREADLINE_PRIVACY_MASTER_KEY (docs/privacy.md)"
        )
    try:
        return Pseudonymizer(
            decode_key(text, "THREADLINE_PRIVACY_PSEUDONYM_KEY"),
            DEFAULT_BLOCKED | blocked_words(settings.streams.identity_blocked),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def wrapper_from(settings) -> KeyWrapper | None:
    from threadline.secrets import secret

    text = secret(settings.privacy, "master_key")
    if text is None:
        return None
    try:
        return MasterKeyWrapper(decode_key(text, "THREADLINE_PRIVACY_MASTER_KEY"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def make_store(settings, *, owner: bool = False) -> PostgresKeyRing | None:
    """The key store the settings ask for; None when privacy (sealing) is off. On the key-store
    role (THREADLINE_PG_KEYSTORE_DSN: SELECT, INSERT on the table, nothing else), or with
    ``owner`` on the projections' owner (THREADLINE_PG_DSN): erasure, which VACUUMs the table."""
    wrapper = wrapper_from(settings)
    if wrapper is None:
        return None
    dsn = settings.effective_pg_dsn if owner else settings.effective_keystore_dsn
    return PostgresKeyRing(dsn, wrapper, pseudonymizer_from(settings))


def create_store(settings) -> bool:
    """Make ``privacy.data_keys`` as the owner when privacy is on (the projector at start), so the
    key-store role of the gateway and the worker, which may not create it, finds it. False when
    privacy is off. KeyStoreUnavailable: PostgreSQL did not answer."""
    ring = make_store(settings, owner=True)
    if ring is None:
        return False
    try:
        ring._run(lambda conn: None)
    finally:
        ring.close()
    return True


def make_keyring(settings, *, cached: bool = False) -> KeyRing | None:
    """The key ring of writers (``cached``: the gateway's, THREADLINE_PRIVACY_KEY_CACHE_SECONDS) and
    readers; None when privacy is off."""
    ring = make_store(settings)
    if ring is not None and cached and settings.privacy.key_cache_seconds > 0:
        return CachedKeyRing(ring, settings.privacy.key_cache_seconds)
    return ring


class OpeningCodec:
    """A codec whose ``decode`` also opens what it decodes (``schemas.privacy.open_record``): the
    one way the projectors and exports read sealed records. The keys a record needs are asked
    once and kept ``keep`` seconds (about one projector batch), so a destroyed key stops opening
    within that time. Encoding is the wrapped codec's, unchanged. The stream processors use the
    plain codec: they work on pseudonyms and pass the sealed fields on as they are."""

    def __init__(self, codec, ring: KeyRing, keep: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.codec, self.ring, self.keep, self.clock = codec, ring, keep, clock
        self._opened: dict[str, Opened] = {}
        self._asked: set[str] = set()  # asked in this window, opened or not (a destroyed key: not asked again)
        self._prefetched: dict[bytes, Decoded] = {}  # the last prefetch's decodes, each taken once by ``decode``
        self._since = 0.0

    def encode(self, topic: str, subject: str, record: dict) -> bytes:
        return self.codec.encode(topic, subject, record)

    def _resolve(self, tokens: list[str]) -> dict[str, Opened]:
        """The ring's answer; the store down: retried for about 15 s (the projector's own
        PostgreSQL is usually down then too), then KeyStoreUnavailable."""
        delay = 0.5
        for _ in range(5):
            try:
                return self.ring.resolve(tokens)
            except KeyStoreUnavailable:
                time.sleep(delay)
                delay *= 2
        return self.ring.resolve(tokens)

    def _fresh(self) -> None:
        now = self.clock()
        if now - self._since >= self.keep:
            self._opened, self._asked, self._since = {}, set(), now

    def _ask(self, tokens: list[str]) -> None:
        for i in range(0, len(tokens), 5000):
            self._opened.update(self._resolve(tokens[i : i + 5000]))
        self._asked.update(tokens)

    def prefetch(self, values: Iterable[bytes]) -> int:
        """The batch hook of the projector engine (``projectors/engine/runner.decode_batch``): ask
        the key store once for the keys of every record in ``values`` (a polled batch), so the
        ``decode`` of each asks nothing more, a destroyed key included. A prefetch starts a new
        window of ``keep`` seconds (what was opened before is asked again), so the batch decoded
        right after it opens from this one answer. Records that do not decode are skipped here
        (their ``decode`` raises as usual). Returns how many keys were asked for."""
        from schemas.privacy import tokens_in
        from threadline.errors import DecodeError

        wanted: set[str] = set()
        self._prefetched = {}
        for data in values:
            try:
                decoded = self.codec.decode(data)
            except DecodeError:
                continue
            self._prefetched[data] = decoded  # decoded once: ``decode`` of the same bytes takes it
            wanted |= tokens_in(decoded.schema_fullname, decoded.record)
        self._opened, self._asked, self._since = {}, set(), self.clock()
        self._ask(sorted(wanted))
        return len(wanted)

    def decode(self, data: bytes):
        from schemas.codec import Decoded
        from schemas.privacy import open_record, tokens_in

        decoded = self._prefetched.pop(data, None) or self.codec.decode(data)
        tokens = tokens_in(decoded.schema_fullname, decoded.record)
        if not tokens:
            return decoded
        self._fresh()
        unknown = sorted(t for t in tokens if t not in self._asked)
        if unknown:
            self._ask(unknown)
        return Decoded(decoded.schema_fullname, open_record(decoded.schema_fullname, decoded.record, self._opened))

    def __getattr__(self, name):  # schema_id, plan, registry ...: the wrapped codec's
        return getattr(self.codec, name)


def dlq_sealer(settings):
    """The ``seal`` of ``threadline.dlq.DeadLetters`` (``schemas.privacy.seal_payload`` on the
    settings' key store), None when privacy is off."""
    from schemas.privacy import seal_payload

    ring = make_store(settings)
    return None if ring is None else lambda raw: seal_payload(raw, ring)


def make_reader_codec(settings, codec=None):
    """The codec of readers of projected data (projectors, exports, the privacy tools): the
    settings' codec, opening sealed records when privacy is on."""
    from schemas.codec import make_codec

    if isinstance(codec, OpeningCodec):  # already a reader's
        return codec
    codec = codec or make_codec(settings)
    ring = make_keyring(settings)
    return OpeningCodec(codec, ring) if ring is not None else codec


def pseudonymous(settings, identity: str) -> str:
    """``kind:[platform:]value`` as the stream processors know it: with privacy on, the value's
    live pseudonym (an identity never seen, or erased, keeps one that links nothing); off, as given.
    For commands that name identities (``threadline identity unlink``)."""
    from schemas.privacy import parse_identity

    ring = make_store(settings)
    if ring is None:
        return identity
    try:
        subject = parse_identity(identity)
        token = ring.current_token(subject) or ring.pseudonymizer.token(subject, -1)
    finally:
        ring.close()
    return Subject(subject.kind, token, subject.platform).label
