"""The normalized forms of identity values: part of the event contract (an identity on the log is
``kind`` + normalized ``value``), used by ingest to write them and by the read side to look
them up, so both agree by construction."""

from __future__ import annotations

import re

import phonenumbers

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def phone_e164(raw: str | None, default_region: str = "IT") -> str | None:
    """``+393471234567`` for any way of writing the number; None when it is not a valid number.

    A ``whatsapp:`` / ``tel:`` prefix is dropped; digits without ``+`` that are not valid in
    ``default_region`` are tried as international (WhatsApp's ``wa_id`` is written that way).
    """
    if not raw:
        return None
    text = raw.strip()
    for prefix in ("whatsapp:", "tel:", "sip:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    text = text.split("@")[0]
    candidates = [text]
    if text and text[0] != "+":
        digits = re.sub(r"\D", "", text)
        if digits.startswith("00"):
            candidates = ["+" + digits[2:]]
        else:
            candidates.append("+" + digits)
    for cand in candidates:
        try:
            num = phonenumbers.parse(cand, default_region.upper())
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return None


def phones_in_text(text: str, default_region: str = "IT") -> list[str]:
    """Every valid phone number written in ``text`` (a signature, say), E.164, in order, once."""
    out: list[str] = []
    for match in phonenumbers.PhoneNumberMatcher(text, default_region.upper()):
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        if e164 not in out:
            out.append(e164)
    return out


def email_norm(raw: str | None) -> str | None:
    """Trimmed and lowercased; None when it is not an address."""
    if not raw:
        return None
    value = raw.strip().strip("<>").strip().lower()
    return value if _EMAIL.match(value) and len(value) <= 320 else None


def handle_norm(raw: str | None) -> str | None:
    """A social handle without ``@`` and lowercased (X and Instagram handles are case-insensitive)."""
    if not raw:
        return None
    value = raw.strip().lstrip("@").strip().lower()
    return value or None


# -- placeholder values: never an identity of anyone ------------------------------------------------------
# Part of the contract because two layers apply them: the identity rules of the stream worker
# (``streams/identity.blocked``: such a value never links customers) and, with privacy on, the
# sealing writers, which give a placeholder a pseudonym of its own shape (``schemas.privacy``) so
# the worker, which sees pseudonyms only, still recognizes it.

DEFAULT_BLOCKED = frozenset(
    {
        "unknown",
        "none",
        "null",
        "n/a",
        "na",
        "-",
        "test",
        "anonymous",
        "test@test.com",
        "test@example.com",
        "noreply@example.com",
        "no@email.com",
        "0000000000",
        "+0000000000",
        "1234567890",
        "+1234567890",
    }
)
NOREPLY_LOCALS = frozenset(
    {
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "mailer-daemon",
        "postmaster",
        "unknown",
        "none",
        "test",
    }
)


def blocked_words(text: str | None) -> frozenset[str]:
    """THREADLINE_IDENTITY_BLOCKED (comma separated) as the set of extra blocked values."""
    return frozenset(p.strip().lower() for p in (text or "").split(",") if p.strip())


def is_placeholder(kind: str, value: str, blocked: frozenset[str] = DEFAULT_BLOCKED) -> bool:
    """A value of ``kind`` that must never link anyone: a blocked value, a no-reply address, a
    phone of too few or repeated digits. Facts (``kind`` ``fact:…``) by the blocked values only."""
    value = value.strip().lower()
    if not value or value in blocked:
        return True
    if kind == "email":
        return value.split("@", 1)[0] in NOREPLY_LOCALS or "@" not in value
    if kind == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        return len(digits) < 6 or len(set(digits)) == 1 or digits in ("1234567890", "0123456789")
    return False
