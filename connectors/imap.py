"""IMAP poller (``threadline ingest imap``): new messages of one mailbox become email contacts.

Each poll asks for ``UID <last+1>:*``, fetches with ``BODY.PEEK[]`` (messages stay unread for
the people who use the mailbox), maps them with ``connectors.email.to_contact``, produces them
and, only once Kafka acknowledged them, stores ``(UIDVALIDITY, last UID)`` in a checkpoint file
in the state folder. A restarted poller goes on from the checkpoint: it neither skips nor
repeats messages. When the server's UIDVALIDITY changes the mailbox is read again from the
start; the deterministic event ids make those repeats harmless.
"""

from __future__ import annotations

import imaplib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from connectors import email
from connectors.base import MapContext, Rejected
from connectors.errors import MalformedPayload, Unmappable
from connectors.importer import ImportSummary, Ledger, run_import
from connectors.sink import Sink
from threadline.errors import ConfigError, RetryableError
from threadline.logging import get_logger

log = get_logger("threadline.imap")
BATCH = 200


class ImapUnavailable(RetryableError):
    pass


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    user: str
    password: str
    mailbox: str = "INBOX"
    ssl: bool = True

    def __repr__(self) -> str:  # never the password
        return f"ImapAccount({self.user}@{self.host}:{self.port}/{self.mailbox})"

    @property
    def checkpoint_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.@-]", "_", f"imap-{self.user}@{self.host}-{self.port}-{self.mailbox}")


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int

    @staticmethod
    def load(path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return Checkpoint(int(data["uidvalidity"]), int(data["last_uid"]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"uidvalidity": self.uidvalidity, "last_uid": self.last_uid}))
        tmp.replace(path)


def uids_after(search_response: bytes, last_uid: int) -> list[int]:
    """The UIDs of a ``UID SEARCH UID n:*`` answer that are really new (``*`` can match the last
    message even when its UID is below n)."""
    return sorted(u for u in (int(x) for x in search_response.split()) if u > last_uid)


def _fetched(data: list) -> list[tuple[int, bytes]]:
    out = []
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            m = re.search(rb"UID (\d+)", item[0])
            if m:
                out.append((int(m.group(1)), item[1]))
    return out


class ImapPoller:
    def __init__(
        self,
        account: ImapAccount,
        sink: Sink,
        ctx: MapContext,
        state_dir: Path,
        own_addresses: frozenset[str] = frozenset(),
    ):
        if not account.password:
            raise ConfigError("no IMAP password: set THREADLINE_IMAP_PASSWORD or THREADLINE_IMAP_PASSWORD_FILE")
        self.account, self.sink, self.ctx, self.own = account, sink, ctx, own_addresses
        self.checkpoint_path = state_dir / "imap" / f"{account.checkpoint_name}.json"
        self.ledger = Ledger(None)

    def _connect(self) -> imaplib.IMAP4:
        a = self.account
        try:
            conn = imaplib.IMAP4_SSL(a.host, a.port, timeout=30) if a.ssl else imaplib.IMAP4(a.host, a.port, timeout=30)
            conn.login(a.user, a.password)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapUnavailable(f"{a!r}: {exc}") from None
        return conn

    def poll_once(self) -> ImportSummary:
        conn = self._connect()
        try:
            typ, _ = conn.select(self.account.mailbox, readonly=True)
            if typ != "OK":
                raise ConfigError(f"no mailbox {self.account.mailbox!r}")
            uidvalidity = int(conn.response("UIDVALIDITY")[1][0])
            cp = Checkpoint.load(self.checkpoint_path)
            last = cp.last_uid if cp and cp.uidvalidity == uidvalidity else 0
            typ, data = conn.uid("SEARCH", None, f"UID {last + 1}:*")
            uids = uids_after(data[0] or b"", last)
            total = ImportSummary()
            for i in range(0, len(uids), BATCH):
                batch = uids[i : i + BATCH]
                typ, data = conn.uid("FETCH", ",".join(map(str, batch)), "(UID BODY.PEEK[])")
                if typ != "OK":
                    raise ImapUnavailable(f"FETCH failed: {typ}")
                messages = sorted(_fetched(data))
                summary = run_import(
                    self._records(messages), self.sink, self.ledger, connector=email.NAME, source=repr(self.account)
                )
                Checkpoint(uidvalidity, max(batch)).save(self.checkpoint_path)
                total.read += summary.read
                total.produced += summary.produced
                total.duplicates += summary.duplicates
                total.rejected += summary.rejected
                total.event_ids += summary.event_ids
            return total
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def _records(self, messages: list[tuple[int, bytes]]):
        for uid, raw in messages:
            where = f"uid {uid}"
            try:
                c = email.to_contact(raw, self.ctx, own_addresses=self.own)
                yield where, c.model_copy(update={"metadata": {**c.metadata, "source": "imap"}})
            except (Unmappable, MalformedPayload) as exc:
                yield where, Rejected(getattr(exc, "reason", None) or str(exc), raw, where)
