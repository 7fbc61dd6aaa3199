"""Email: raw RFC 5322 messages, whichever way they arrive (``POST /webhooks/email`` with a
``message/rfc822`` body, the IMAP poller, the mbox importer), mapped by one pure function.

* identities: the sender's address (primary); phone numbers written in the signature are
  offered as ``hint`` identities (offered, not proven);
* thread hints: Message-ID, In-Reply-To and References, as written (angle brackets kept);
* text: the plain-text part (or the HTML part without tags) *without* quoted replies ("> ..."
  lines, "On <date>, <name> wrote:" in the five languages of the product, Outlook's "-----Original
  Message-----" / "From:" blocks) and *without* the signature ("-- " delimiter, or a short
  sign-off such as "Best regards," / "Cordiali saluti," / "Met vriendelijke groet," /
  "Pozdrawiam," / "Saygılarımla," near the end);
* occurred_at: the ``Date`` header (UTC); attachments as metadata (name, type, size, sha256);
* direction: outbound when the sender is one of ``own_addresses`` (the business's mailboxes).

The provider id is the Message-ID, or the SHA-256 of the raw message when it has none, so a
re-import of the same message has the same event id.
"""

from __future__ import annotations

import hashlib
import html
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

from connectors import generic
from connectors.base import Connector, MapContext, Mapped, Rejected, WebhookRequest, build_contact
from connectors.contact import ContactIn, IdentityIn
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import email_norm, parse_time, phones_in_text

NAME = "email"

_QUOTE_HEADERS = [
    r"^on .{3,200}wrote:\s*$",  # en
    r"^il giorno .{3,200}ha scritto:\s*$",  # it
    r"^.{0,200}ha scritto:\s*$",  # it (short form)
    r"^op .{3,200}schreef .{0,200}:\s*$",  # nl
    r"^w dniu .{3,200}napisał(?:a|\(a\))?:\s*$",  # pl
    r"^.{3,200}tarihinde .{0,200}yazdı:\s*$",  # tr
    r"^am .{3,200}schrieb .{0,200}:\s*$",  # de
    r"^le .{3,200}a écrit\s*:\s*$",  # fr
    r"^-{2,}\s*(?:original message|messaggio originale|oorspronkelijk bericht|wiadomość oryginalna|orijinal mesaj)\s*-{2,}\s*$",
    r"^_{10,}\s*$",  # Outlook's rule above the quoted header block
    r"^(?:from|da|van|od|kimden|von):\s.+$",  # a quoted header block (only after a blank line)
]
_QUOTE_RX = [re.compile(p, re.IGNORECASE) for p in _QUOTE_HEADERS]
_SIGNOFF = re.compile(
    r"^(?:best(?: regards)?|kind regards|regards|thanks(?: again)?|thank you|cheers|"
    r"cordiali saluti|distinti saluti|saluti|un saluto|grazie(?: mille)?|"
    r"met vriendelijke groet(?:en)?|vriendelijke groet(?:en)?|groeten|mvg|"
    r"pozdrawiam(?: serdecznie)?|z poważaniem|dziękuję|"
    r"saygılarımla|saygılar|teşekkürler|iyi çalışmalar|"
    r"mit freundlichen grüßen|viele grüße|cordialement)[,.!]?\s*$",
    re.IGNORECASE,
)


def parse_message(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not msg.keys():
        raise MalformedPayload("<body>", "not an RFC 5322 message: no header fields")
    return msg


def split_reply(text: str) -> tuple[str, str]:
    """(what the sender wrote, their signature). Quoted replies are dropped from both."""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith(">"):
            cut = i
            break
        if any(rx.match(s) for rx in _QUOTE_RX[:-1]):
            cut = i
            break
        if _QUOTE_RX[-1].match(s) and (i == 0 or not lines[i - 1].strip()) and i > 0:
            nxt = " ".join(lines[i + 1 : i + 4]).lower()
            if any(
                h in nxt
                for h in (
                    "sent:",
                    "to:",
                    "subject:",
                    "inviato:",
                    "verzonden:",
                    "wysłano:",
                    "gönderildi:",
                    "oggetto:",
                    "onderwerp:",
                    "temat:",
                    "konu:",
                )
            ):
                cut = i
                break
    body = lines[:cut]
    sig_at = None
    for i, line in enumerate(body):
        if line in ("-- ", "--") or line.rstrip() == "-- ":
            sig_at = i
            break
    if sig_at is None:
        start = max(0, len(body) - 12)
        for i in range(start, len(body)):
            if _SIGNOFF.match(body[i].strip()) and len(body) - i <= 8 and any(x.strip() for x in body[:i]):
                sig_at = i
                break
    if sig_at is None:
        return "\n".join(body).strip(), ""
    signature = "\n".join(body[sig_at:]).strip()
    return "\n".join(body[:sig_at]).strip(), signature


def _html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style).*?</\1>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)
    markup = re.sub(r"(?i)<blockquote.*?</blockquote>", "\n", markup, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        content = part.get_payload(decode=True).decode("utf-8", "replace")
    return _html_to_text(content) if part.get_content_type() == "text/html" else content


def _attachments(msg: EmailMessage) -> list[dict]:
    out = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True) or b""
        out.append(
            {
                "name": part.get_filename(),
                "content_type": part.get_content_type(),
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return out


def _ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def to_contact(
    raw: bytes, ctx: MapContext, *, connector: str = NAME, own_addresses: frozenset[str] = frozenset()
) -> ContactIn:
    """One raw message -> one contact. MalformedPayload / Unmappable when it cannot be."""
    msg = parse_message(raw)
    senders = [email_norm(a) for _, a in getaddresses([str(msg.get("From", ""))])]
    sender = next((s for s in senders if s), None)
    if sender is None:
        raise Unmappable("no valid From address")
    if not msg.get("Date"):
        raise Unmappable("no Date header: the time of the message is unknown")
    try:
        occurred = parse_time(str(msg["Date"]), "Date")
    except MalformedPayload as exc:
        raise Unmappable(f"Date: {exc.problem}") from None
    outbound = sender in own_addresses
    idents: list[IdentityIn] = []
    if outbound:
        recipients = [email_norm(a) for _, a in getaddresses([str(msg.get("To", ""))])]
        customer = next((r for r in recipients if r and r not in own_addresses), None)
        if customer is None:
            raise Unmappable("outbound message without a customer recipient")
        idents.append(IdentityIn(kind="email", value=customer, primary=True))
    else:
        idents.append(IdentityIn(kind="email", value=sender, primary=True))
    text, signature = split_reply(_text_of(msg))
    if not outbound and signature:
        for phone in phones_in_text(signature, ctx.region):
            idents.append(IdentityIn(kind="phone", value=phone, strength="hint"))
    message_id = (_ids(msg.get("Message-ID")) or [None])[0]
    provider_id = message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
    name = next((n for n, a in getaddresses([str(msg.get("From", ""))]) if n), None)
    return build_contact(
        {
            "provider_id": provider_id,
            "connector": connector,
            "channel": "email",
            "direction": "outbound" if outbound else "inbound",
            "occurred_at": occurred,
            "actor": {"role": "agent" if outbound else "customer", "display_name": name},
            "identities": idents,
            "subject": str(msg.get("Subject")) if msg.get("Subject") else None,
            "text": text or None,
            "language": str(msg.get("Content-Language") or "") or None,
            "attachments": _attachments(msg),
            "thread": {
                "message_id": message_id,
                "in_reply_to": (_ids(msg.get("In-Reply-To")) or [None])[0],
                "references": _ids(msg.get("References")),
            },
        },
        ctx,
    )


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    if not req.body.strip():
        raise MalformedPayload("<body>", "empty message")
    try:
        return [to_contact(req.body, ctx)]
    except Unmappable as exc:
        return [Rejected(exc.reason, req.body)]


CONNECTOR = Connector(
    NAME,
    ("message/rfc822",),
    "webhook_secret",
    generic.verify,
    parse,
    doc="inbound email webhook: the raw RFC 5322 message as the body",
)
