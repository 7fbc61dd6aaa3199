"""Crypto-shredding, the pure part of the contract: how personal fields travel sealed and how a
reader opens them again. No I/O here: the key store is a ``KeyRing`` given by the caller
(``schemas.keystore`` is the PostgreSQL one; ``MemoryKeyRing`` below is the in-process one the
unit tests and the bench use).

Model (docs/privacy.md):

* A *subject* is one identity (``kind``, ``platform``, normalized ``value``) or one fact value
  (``fact:<kind>``, value stripped and lowercased). Each subject has, per *generation*, a data key
  (AES-256) and a *pseudonym* (token): a keyed HMAC of the subject and its generation, shaped so
  the identity rules treat it as a value of its kind (an email pseudonym is ``…@pseudonym.invalid``,
  a phone pseudonym ``+000`` + 12 digits, others ``~`` + base32). The key store keeps, per token,
  the wrapped data key and the subject's value encrypted under that key.
* Sealing a contact (``seal_contact``): every identity and fact value is replaced by its
  pseudonym, and subject, text, the actor's display name, the attachments' names and URLs and the
  fact values as written (the key store keeps facts stripped and lowercased) are
  encrypted with AES-GCM under the data key of the contact's primary identity (``sealed``),
  with the event id and the key's token as associated data. Record keys built from a sealed
  contact are pseudonyms: no identity value in clear is left on the record.
* Opening (``open_record``): pseudonyms are replaced by their values from the key ring and the
  sealed fields decrypted. A destroyed key (an erased customer) leaves the documented
  placeholder: the pseudonym stays where a value was, subject/text/display name and attachment
  names and URLs are null, and ``metadata["privacy"] = "erased"``. Records written in the clear
  (contact v1, or sealing off) open as they are.
* Erasure destroys the data keys; the next write of an erased subject gets the next generation,
  so a new key and a new pseudonym: the identity graph sees a new identity, a new customer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.identities import DEFAULT_BLOCKED, is_placeholder, phones_in_text

CONTACT_FULLNAME = "threadline.contact.Contact"
IDENTITY_EVENT_FULLNAME = "threadline.identity.IdentityEvent"
CONVERSATION_EVENT_FULLNAME = "threadline.conversation.ConversationEvent"
CUSTOMER_PROFILE_FULLNAME = "threadline.profile.CustomerProfile"

EMAIL_PSEUDONYM_DOMAIN = "pseudonym.invalid"
PHONE_PSEUDONYM_PREFIX = "+000"
OTHER_PSEUDONYM_PREFIX = "~"
# tokens of placeholder values (no-reply addresses, repeated-digit phones, blocked values): a shape
# of their own that the identity rules refuse (no country code starts with 0, b32 has no ".")
BLOCKED_EMAIL_DOMAIN = "blocked." + EMAIL_PSEUDONYM_DOMAIN
BLOCKED_PHONE_PREFIX = "+001"
BLOCKED_OTHER_PREFIX = "~blocked."
THREAD_HINT_PREFIX = "~t."
HINT_FIELDS = ("message_id", "in_reply_to", "reply_to_id")  # thread hints that name a message (and references)
ERASED = "erased"  # metadata["privacy"] of a record whose keys are gone
KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True)
class Subject:
    """One value whose key can be destroyed: an identity, or a fact (``kind = "fact:<kind>"``)."""

    kind: str
    value: str
    platform: str | None = None

    @property
    def label(self) -> str:
        """``kind:[platform:]value``: never logged, only hashed."""
        platform = f"{self.platform}:" if self.platform else ""
        return f"{self.kind}:{platform}{self.value}"


def identity_subject(identity: dict) -> Subject:
    return Subject(str(identity["kind"]), str(identity["value"]), identity.get("platform") or None)


def fact_subject(fact: dict) -> Subject:
    return Subject(f"fact:{fact['kind']}", str(fact["value"]).strip().lower())


def parse_identity(text: str) -> Subject:
    """``kind:[platform:]value`` as the CLI and the API take it; ValueError naming what is wrong."""
    kind, sep, rest = text.partition(":")
    if not sep or not kind or not rest:
        raise ValueError(f"identity must be kind:value (kind:platform:value for social and account), got {text!r}")
    if kind in ("social", "account") and ":" in rest:
        platform, _, value = rest.partition(":")
        return Subject(kind, value, platform or None)
    return Subject(kind, rest, None)


class Pseudonymizer:
    """Keyed HMACs of subjects: the key store's lookup reference and the per-generation token.

    A placeholder value (``schemas.identities.is_placeholder``: a no-reply address, a phone of
    repeated digits, a value of ``blocked``, THREADLINE_IDENTITY_BLOCKED added to the defaults)
    gets a token of its own shape (``is_blocked_pseudonym``), so the identity rules, which see
    tokens only, still refuse to link through it."""

    def __init__(self, key: bytes, blocked: frozenset[str] = DEFAULT_BLOCKED):
        if len(key) < 16:
            raise ValueError("the pseudonym key must have at least 16 bytes")
        self._key = key
        self.blocked = blocked

    def placeholder(self, subject: Subject) -> bool:
        kind = subject.kind
        if kind.startswith("fact:"):
            return subject.value.strip().lower() in self.blocked
        return kind != "event" and is_placeholder(kind, subject.value, self.blocked)

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).digest()

    def lookup_ref(self, subject: Subject) -> str:
        """Which key-store rows belong to a subject, across generations."""
        return self._mac("lookup", subject.label).hex()

    def hint(self, value: str) -> str:
        """A thread hint's or provider id's keyed MAC (``~t.`` + hex): equal values, equal
        hints, so the stream worker still threads replies on them; the value is in ``sealed``."""
        # keyed BLAKE2b (a MAC by design; a third of HMAC-SHA256's cost): a contact has a few hints,
        # made on the gateway's hot path
        mac = hashlib.blake2b(value.encode(), key=self._key[:64], digest_size=15, person=b"threadline-hint")
        return THREAD_HINT_PREFIX + mac.hexdigest()

    def token(self, subject: Subject, generation: int) -> str:
        mac = self._mac("token", str(generation), subject.label)
        b32 = base64.b32encode(mac[:15]).decode().lower()
        blocked = self.placeholder(subject)
        if subject.kind == "email":
            return b32 + "@" + (BLOCKED_EMAIL_DOMAIN if blocked else EMAIL_PSEUDONYM_DOMAIN)
        if subject.kind == "phone":
            prefix = BLOCKED_PHONE_PREFIX if blocked else PHONE_PSEUDONYM_PREFIX
            return prefix + str(int.from_bytes(mac[:8], "big") % 10**12).zfill(12)
        return (BLOCKED_OTHER_PREFIX if blocked else OTHER_PSEUDONYM_PREFIX) + b32


def _phone_token(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and len(value) == 16 and value[1:].isdigit()


def is_pseudonym(value: str | None) -> bool:
    if not value:
        return False
    return (
        value.endswith("@" + EMAIL_PSEUDONYM_DOMAIN)
        or value.endswith("@" + BLOCKED_EMAIL_DOMAIN)
        or value.startswith(OTHER_PSEUDONYM_PREFIX)
        or _phone_token(value, PHONE_PSEUDONYM_PREFIX)
        or _phone_token(value, BLOCKED_PHONE_PREFIX)
    )


def is_blocked_pseudonym(value: str | None) -> bool:
    """The token of a placeholder value (``Pseudonymizer.placeholder``): never an identity of anyone."""
    if not value:
        return False
    return (
        value.endswith("@" + BLOCKED_EMAIL_DOMAIN)
        or value.startswith(BLOCKED_OTHER_PREFIX)
        or _phone_token(value, BLOCKED_PHONE_PREFIX)
    )


@dataclass(frozen=True)
class DataKey:
    """A subject's current key: its token (the key id on the log) and the AES-256 key."""

    token: str
    key: bytes


@dataclass(frozen=True)
class Opened:
    """What the key ring gives back for a live token: the key and the subject's value."""

    key: bytes
    value: str


class KeyRing(Protocol):
    def ensure(self, subjects: Sequence[Subject]) -> dict[Subject, DataKey]:
        """The current key of each subject, created (next generation) when it has none."""

    def resolve(self, tokens: Iterable[str]) -> dict[str, Opened]:
        """Keys and values of the tokens that still have them; destroyed or unknown ones absent."""


def seal_value(key: bytes, value: str, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, value.encode(), aad)


def open_value(key: bytes, blob: bytes, aad: bytes) -> str | None:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode()
    except (InvalidTag, ValueError):
        return None


def _aad(event_id: str, token: str) -> bytes:
    return f"{event_id}\x00{token}".encode()


def _primary(identities: list[dict]) -> dict | None:
    return next((i for i in identities if i.get("primary")), identities[0] if identities else None)


def subjects_of(record: dict) -> list[Subject]:
    """Every subject of a contact in the clear (identities, then facts), each once."""
    out: dict[Subject, None] = {}
    for ident in record.get("identities") or []:
        out[identity_subject(ident)] = None
    if not out:  # a contact with no identity still gets a key of its own, so its text is sealed too
        out[Subject("event", str(record["event_id"]))] = None
    for fact in record.get("facts") or []:
        out[fact_subject(fact)] = None
    return list(out)


def seal_contact(record: dict, ring: KeyRing) -> dict:
    """The contact with personal fields sealed (contact v2). Pure but for the key ring's answer."""
    if record.get("sealed"):
        return record
    identities = list(record.get("identities") or [])
    keys = ring.ensure(subjects_of(record))
    primary = _primary(identities)
    body_subject = identity_subject(primary) if primary else Subject("event", str(record["event_id"]))
    body_key = keys[body_subject]
    actor = dict(record.get("actor") or {})
    attachments = [dict(a) for a in record.get("attachments") or []]
    body = {
        "subject": record.get("subject"),
        "text": record.get("text"),
        "display_name": actor.get("display_name"),
        "attachments": [[a.get("name"), a.get("url")] for a in attachments],
        "facts": [f["value"] for f in record.get("facts") or []],
    }  # as written (the key store has them normalized)
    pseudonymizer = getattr(ring, "pseudonymizer", None)
    thread = dict(record.get("thread") or {})
    if pseudonymizer is not None:  # Message-IDs can hold a name or a domain: MACs on the log, values sealed
        body["provider_id"] = record.get("provider_id")
        body["thread"] = {k: thread.get(k) for k in (*HINT_FIELDS, "references")}
        for k in HINT_FIELDS:
            if thread.get(k):
                thread[k] = pseudonymizer.hint(thread[k])
        thread["references"] = [pseudonymizer.hint(r) for r in thread.get("references") or []]
    blob = seal_value(
        body_key.key,
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        _aad(str(record["event_id"]), body_key.token),
    )
    actor["display_name"] = None
    for a in attachments:
        a["name"] = a["url"] = None
    out = dict(record)
    out.update(
        identities=[dict(i, value=keys[identity_subject(i)].token) for i in identities],
        facts=[dict(f, value=keys[fact_subject(f)].token) for f in record.get("facts") or []],
        subject=None,
        text=None,
        actor=actor,
        attachments=attachments,
        sealed={"key": body_key.token, "nonce": blob[:NONCE_BYTES], "ciphertext": blob[NONCE_BYTES:]},
    )
    if pseudonymizer is not None:
        out["thread"] = thread
        if record.get("provider_id"):
            out["provider_id"] = pseudonymizer.hint(str(record["provider_id"]))
    return out


def pseudonymize_profile(record: dict, tokens: dict[Subject, str]) -> dict:
    """A customer_profile record (values in the clear, as the read model has them) for
    customer-profiles.v1 with privacy on: identity and fact values, and ``last_order``, become the
    live pseudonyms ``tokens`` gives for their subjects (a key ring's ``current_tokens``); an identity
    or fact whose subject has no live key (erased meanwhile) is left out. Nothing else of a profile is
    personal by the contract (ids, times, channels, counts, conversations, consent, sentiment)."""
    identities = []
    for i in record.get("identities") or []:
        token = tokens.get(identity_subject(i))
        if token is not None:
            identities.append(dict(i, value=token))
    facts = []
    for f in record.get("facts") or []:
        token = tokens.get(fact_subject(f))
        if token is not None:
            facts.append(dict(f, value=token))
    last = record.get("last_order")
    return dict(
        record,
        identities=identities,
        facts=facts,
        last_order=None if last is None else tokens.get(fact_subject({"kind": "order_number", "value": last})),
    )


def profile_subjects(record: dict) -> list[Subject]:
    """The subjects whose pseudonyms ``pseudonymize_profile`` needs."""
    out: dict[Subject, None] = {identity_subject(i): None for i in record.get("identities") or []}
    out.update({fact_subject(f): None for f in record.get("facts") or []})
    if record.get("last_order") is not None:
        out[fact_subject({"kind": "order_number", "value": record["last_order"]})] = None
    return list(out)


def tokens_in(fullname: str, record: dict) -> set[str]:
    """The pseudonyms a record carries, to resolve in one call per batch."""
    found: set[str] = set()
    if fullname == CUSTOMER_PROFILE_FULLNAME:
        values = [i.get("value") for i in record.get("identities") or []]
        values += [f.get("value") for f in record.get("facts") or []] + [record.get("last_order")]
        return {v for v in values if is_pseudonym(v)}
    if fullname == CONTACT_FULLNAME and not record.get("sealed"):
        return found
    for ident in [*(record.get("identities") or []), *(record.get("moved_identities") or [])]:
        if is_pseudonym(ident.get("value")):
            found.add(ident["value"])
    for fact in record.get("facts") or []:
        if is_pseudonym(fact.get("value")):
            found.add(fact["value"])
    sealed = record.get("sealed")
    if sealed:
        found.add(sealed["key"])
    return found


def _erased(record: dict) -> dict:
    return dict(record, metadata={**(record.get("metadata") or {}), "privacy": ERASED})


def open_record(fullname: str, record: dict, keys: dict[str, Opened]) -> dict:
    """A decoded record with its pseudonyms and sealed fields opened from ``keys`` (a key ring's
    ``resolve`` of ``tokens_in``); what has no key left keeps the placeholder (module doc)."""
    if fullname == CUSTOMER_PROFILE_FULLNAME:
        return _open_profile(record, keys)
    if fullname not in (CONTACT_FULLNAME, IDENTITY_EVENT_FULLNAME, CONVERSATION_EVENT_FULLNAME):
        return record
    if fullname == CONTACT_FULLNAME and not record.get("sealed"):
        return record
    missing = False

    def value(v: str) -> str:
        nonlocal missing
        if not is_pseudonym(v):
            return v
        hit = keys.get(v)
        if hit is None:
            missing = True
            return v
        return hit.value

    out = dict(record)
    for k in ("identities", "moved_identities"):
        if k in record:
            out[k] = [dict(i, value=value(i["value"])) for i in record.get(k) or []]
    if "facts" in record:
        out["facts"] = [dict(f, value=value(f["value"])) for f in record.get("facts") or []]
    sealed = record.get("sealed")
    if fullname != CONTACT_FULLNAME or not sealed:
        return _erased(out) if missing and fullname == CONTACT_FULLNAME else out
    out["sealed"] = None
    hit = keys.get(sealed["key"])
    text = None
    if hit is not None:
        text = open_value(
            hit.key, bytes(sealed["nonce"]) + bytes(sealed["ciphertext"]), _aad(str(record["event_id"]), sealed["key"])
        )
    if text is None:
        return _erased(out)
    body = json.loads(text)
    out["subject"], out["text"] = body.get("subject"), body.get("text")
    if "thread" in body:  # sealed with thread hints (older sealed contacts have them in the clear)
        out["thread"] = {**(record.get("thread") or {}), **body["thread"]}
        out["provider_id"] = body.get("provider_id") or record.get("provider_id")
    out["actor"] = dict(record.get("actor") or {}, display_name=body.get("display_name"))
    written = body.get("facts")
    if written is not None and len(written) == len(out.get("facts") or []):
        out["facts"] = [dict(f, value=v) for f, v in zip(out["facts"], written)]
    pairs = body.get("attachments") or []
    attachments = list(record.get("attachments") or [])
    out["attachments"] = [dict(a, name=p[0], url=p[1]) for a, p in zip(attachments, pairs)] + attachments[len(pairs) :]
    return _erased(out) if missing else out


def _open_profile(record: dict, keys: dict[str, Opened]) -> dict:
    """A profile's pseudonyms opened; one whose key is gone stays a pseudonym (its customer's
    profile is tombstoned by the erasure, so only a reader of an older copy meets one)."""

    def value(v: str | None) -> str | None:
        hit = keys.get(v) if v is not None and is_pseudonym(v) else None
        return v if hit is None else hit.value

    return dict(
        record,
        identities=[dict(i, value=value(i["value"])) for i in record.get("identities") or []],
        facts=[dict(f, value=value(f["value"])) for f in record.get("facts") or []],
        last_order=value(record.get("last_order")),
    )


def pseudonymized(opened: dict, sealed: dict) -> dict:
    """An opened record with its identities as the log has them (``threadline export
    --pseudonymize``): identity and fact values, provider id and thread hints from ``sealed``
    (pseudonyms and MACs), the actor's display name left out; texts and everything else opened."""
    out = dict(opened)
    for k in ("identities", "moved_identities", "facts", "provider_id", "thread", "last_order"):
        if k in sealed:
            out[k] = sealed[k]
    if isinstance(out.get("actor"), dict):
        out["actor"] = dict(out["actor"], display_name=None)
    return out


def open_one(fullname: str, record: dict, ring: KeyRing) -> dict:
    """``open_record`` of one record, asking the ring for its tokens."""
    tokens = tokens_in(fullname, record)
    return open_record(fullname, record, ring.resolve(tokens) if tokens else {})


# -- dead letters: raw payloads under a key of their own ------------------------------------------------

SEALED_KEY_HEADER = "sealed_key"  # a sealed dead letter's header: the token of the key its value is sealed under


def seal_payload(raw: bytes | None, ring: KeyRing) -> tuple[bytes | None, dict[str, str]]:
    """A dead letter's raw payload sealed (AES-GCM) under a data key of its own (subject ``dlq``,
    a random id: a rejected payload's identity is not known, that is why it was rejected), and
    the header naming that key. Erasure destroys the key of every dead letter whose payload
    mentions one of the customer's values (``mentions``; docs/privacy.md)."""
    if raw is None:
        return None, {}
    subject = Subject("dlq", uuid.uuid4().hex)
    key = ring.ensure([subject])[subject]
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key.key).encrypt(nonce, raw, key.token.encode()), {SEALED_KEY_HEADER: key.token}


def open_payload(blob: bytes, token: str, keys: dict[str, Opened]) -> bytes | None:
    """The raw payload of a sealed dead letter; None when its key is gone (or the bytes were changed)."""
    hit = keys.get(token)
    if hit is None:
        return None
    try:
        return AESGCM(hit.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], token.encode())
    except (InvalidTag, ValueError):
        return None


def mentions(raw: bytes, subjects: Iterable[Subject], region: str = "IT") -> bool:
    """Whether a payload holds one of the subjects' values, as written, JSON-escaped or
    URL-encoded, case-insensitively (a phone also without its ``+``), or, for a phone, written
    any other way ingest reads as that number (spaces, dashes, national format in ``region``:
    ``schemas.identities.phones_in_text``, the function ingest finds phones in text with)."""
    from urllib.parse import quote, quote_plus

    subjects = list(subjects)
    text = raw.lower()
    for s in subjects:
        value = s.value.strip().lower()
        if not value:
            continue
        forms = {value, json.dumps(value)[1:-1], quote(value).lower(), quote_plus(value).lower()}
        if s.kind == "phone":
            forms.add(value.lstrip("+"))
        if any(f.encode() in text for f in forms):
            return True
    phones = {s.value.strip() for s in subjects if s.kind == "phone" and s.value.strip()}
    return bool(phones) and not phones.isdisjoint(phones_written(raw, region))


def phones_written(raw: bytes, region: str = "IT") -> set[str]:
    """Every phone number ``raw`` holds, E.164, as ingest normalizes them: in the text as it is,
    URL-decoded and JSON-unescaped (a form post, a JSON body)."""
    from urllib.parse import unquote, unquote_plus

    text = raw.decode("utf-8", errors="replace")
    forms = {text, unquote(text), unquote_plus(text)}
    try:
        forms.add(json.dumps(json.loads(text), ensure_ascii=False))
    except ValueError:
        pass
    return {p for form in forms for p in phones_in_text(form, region)}


# -- key wrapping: the master key (or a KMS) -------------------------------------------------------------


class KeyWrapper(Protocol):
    """Wraps data keys under a key Threadline does not store next to them (a master key from a
    secret today; a KMS's encrypt/decrypt calls fit the same two methods)."""

    key_id: str

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class MasterKeyWrapper:
    """AES-GCM under a 256-bit master key; ``context`` (the token) is the associated data, so a
    wrapped key moved to another row does not unwrap."""

    def __init__(self, master: bytes, key_id: str = "master-1"):
        if len(master) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(master)
        self.key_id = key_id

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)


def decode_key(text: str, name: str) -> bytes:
    """A key given as base64 (or hex) text; ValueError naming the setting when it is neither."""
    text = text.strip()
    for decode in (lambda t: bytes.fromhex(t), lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text)
        except ValueError:
            continue
        if len(raw) == KEY_BYTES:
            return raw
    raise ValueError(f"{name}: give 32 random bytes as base64 or hex (e.g. `openssl rand -base64 32`)")


# -- an in-process key ring (unit tests, bench) ------------------------------------------------------------


@dataclass
class _Row:
    token: str
    wrapped: bytes | None
    value_blob: bytes | None


@dataclass
class MemoryKeyRing:
    """The key store's semantics without a database: generations, destroy, wrapped keys."""

    pseudonymizer: Pseudonymizer
    wrapper: KeyWrapper
    rows: dict[str, list[_Row]] = field(default_factory=dict)  # lookup ref -> generations

    def ensure(self, subjects: Sequence[Subject]) -> dict[Subject, DataKey]:
        out = {}
        for s in subjects:
            gens = self.rows.setdefault(self.pseudonymizer.lookup_ref(s), [])
            if not gens or gens[-1].wrapped is None:
                token = self.pseudonymizer.token(s, len(gens))
                key = AESGCM.generate_key(bit_length=256)
                gens.append(
                    _Row(token, self.wrapper.wrap(key, token.encode()), seal_value(key, s.value, token.encode()))
                )
            row = gens[-1]
            assert row.wrapped is not None
            out[s] = DataKey(row.token, self.wrapper.unwrap(row.wrapped, row.token.encode()))
        return out

    def resolve(self, tokens: Iterable[str]) -> dict[str, Opened]:
        wanted = set(tokens)
        out = {}
        for gens in self.rows.values():
            for row in gens:
                if row.token in wanted and row.wrapped is not None and row.value_blob is not None:
                    key = self.wrapper.unwrap(row.wrapped, row.token.encode())
                    value = open_value(key, row.value_blob, row.token.encode())
                    if value is not None:
                        out[row.token] = Opened(key, value)
        return out

    def tokens_of(self, subject: Subject) -> list[str]:
        return [r.token for r in self.rows.get(self.pseudonymizer.lookup_ref(subject), [])]

    def current_tokens(self, subjects: Iterable[Subject]) -> dict[Subject, str]:
        """The live token of each subject that has one; never creates a key."""
        out = {}
        for s in subjects:
            gens = self.rows.get(self.pseudonymizer.lookup_ref(s), [])
            if gens and gens[-1].wrapped is not None:
                out[s] = gens[-1].token
        return out

    def destroy(self, tokens: Iterable[str]) -> int:
        wanted, n = set(tokens), 0
        for gens in self.rows.values():
            for row in gens:
                if row.token in wanted and row.wrapped is not None:
                    row.wrapped = row.value_blob = None
                    n += 1
        return n


def record_key(record: dict) -> bytes:
    """contacts.v1's record key from a (sealed) record: ``kind:[platform:]<pseudonym>`` of its
    primary identity, as ``connectors.contact.partition_key`` builds it from values in the clear."""
    primary = _primary(list(record.get("identities") or []))
    if primary is None:
        return f"event:{record['event_id']}".encode()
    return identity_subject(primary).label.encode()
