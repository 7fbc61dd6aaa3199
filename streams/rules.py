"""Rule configuration of the stream processors: frozen dataclasses, made from the settings
(``threadline.settings.StreamsSettings``, which reads the environment).

Every rule the issue names is a setting here with a sensible default, so a deployment changes
windows, targets, limits or blocked values without touching code:

    THREADLINE_IDENTITY_HINT_LINKS        1 = identities of strength "hint" (a phone in an email
                                          signature) link too; off by default
    THREADLINE_IDENTITY_LINK_FACTS        fact kinds that link customers (order_number,account_number)
    THREADLINE_IDENTITY_LIMITS            per-kind limit of identities per customer (email=2,phone=2,...)
    THREADLINE_IDENTITY_PRIORITY          kinds, strongest first: decides which link is dropped at a limit
    THREADLINE_IDENTITY_BLOCKED           extra blocked values, comma separated (normalized values)
    THREADLINE_STITCH_WINDOWS             inactivity window per channel in seconds (chat=1800,email=259200,...)
    THREADLINE_STITCH_REOPEN_SECONDS      a contact this soon after resolution reopens the conversation
    THREADLINE_STITCH_RETENTION_SECONDS   how long (event time) after its resolution a conversation can still
                                          be changed by a late contact before it is frozen to a summary
    THREADLINE_SLA_TARGETS                first/next response target per channel in seconds
    THREADLINE_SLA_RESOLUTION_SECONDS     resolution target
    THREADLINE_SLA_BUSINESS_HOURS         e.g. "Europe/Rome mon-fri 09:00-18:00"; unset = around the clock
    THREADLINE_SLA_TIMER_GRACE_SECONDS    allowed lateness: the watermark trails the latest event time by this much
    THREADLINE_STREAMS_IDLE_SECONDS       a partition with no record for this long (and no lag) is idle: its
                                          watermark follows the wall clock
    THREADLINE_STREAMS_IDLE_HOLD_SECONDS  0 (off) or how long an idle partition's watermark first advances from
                                          its latest event time at the wall clock's pace (streams/clocks.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from types import MappingProxyType
from typing import Mapping

from threadline.settings import StreamsSettings
from schemas.identities import DEFAULT_BLOCKED, blocked_words

DEFAULT_PRIORITY = ("account", "email", "phone", "fact", "social", "chat_visitor", "device", "cookie", "other")
DEFAULT_LIMITS = MappingProxyType(
    {"account": 2, "email": 2, "phone": 2, "social": 6, "chat_visitor": 50, "device": 20, "cookie": 50, "other": 10}
)
SOCIAL_CHANNELS = ("twitter", "facebook", "instagram", "review")
DEFAULT_SLA_TARGETS = MappingProxyType(
    {
        "chat": 120,
        "sms": 900,
        "whatsapp": 900,
        "twitter": 900,
        "facebook": 900,
        "instagram": 900,
        "review": 900,
        "email": 3600,
        "web_form": 3600,
        "voice": 120,
        "ivr": 120,
        "store": 3600,
        "other": 3600,
    }
)
HOUR = 3600
DEFAULT_WINDOWS = MappingProxyType(
    {
        "chat": 2 * HOUR,
        "voice": 24 * HOUR,
        "ivr": 24 * HOUR,
        "sms": 24 * HOUR,
        "whatsapp": 24 * HOUR,
        "twitter": 24 * HOUR,
        "facebook": 24 * HOUR,
        "instagram": 24 * HOUR,
        "review": 72 * HOUR,
        "email": 72 * HOUR,
        "web_form": 72 * HOUR,
        "store": 24 * HOUR,
        "other": 24 * HOUR,
    }
)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class IdentityRules:
    hint_links: bool = False
    link_fact_kinds: frozenset[str] = frozenset({"order_number", "account_number"})
    limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LIMITS)
    priority: tuple[str, ...] = DEFAULT_PRIORITY
    blocked_values: frozenset[str] = DEFAULT_BLOCKED

    def rank(self, kind: str) -> int:
        return self.priority.index(kind) if kind in self.priority else len(self.priority)


@dataclass(frozen=True)
class BusinessHours:
    """Opening hours in one time zone: ``days`` (0 = Monday) from ``opens`` to ``closes``."""

    tz: str = "UTC"
    days: frozenset[int] = frozenset(range(5))
    opens: time = time(9)
    closes: time = time(17)

    @classmethod
    def parse(cls, text: str) -> BusinessHours:
        """``"Europe/Rome mon-fri 09:00-18:00"``."""
        try:
            tz, days, hours = text.split()
            first, _, last = days.lower().partition("-")
            a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
            opens, closes = (time.fromisoformat(h) for h in hours.split("-"))
        except ValueError as exc:
            raise ValueError(f"business hours must look like 'Europe/Rome mon-fri 09:00-18:00': {text!r}") from exc
        if closes <= opens:
            raise ValueError(f"business hours close before they open: {text!r}")
        return cls(tz, frozenset(range(a, b + 1)), opens, closes)


@dataclass(frozen=True)
class StitchRules:
    windows: Mapping[str, int] = field(default_factory=lambda: DEFAULT_WINDOWS)
    reopen_seconds: int = 72 * HOUR
    retention_seconds: int = 30 * 24 * HOUR
    sla_targets: Mapping[str, int] = field(default_factory=lambda: DEFAULT_SLA_TARGETS)
    resolution_seconds: int = 24 * HOUR
    business_hours: BusinessHours | None = None
    timer_grace_seconds: int = 2  # allowed lateness: the watermark trails the latest event time by this
    idle_seconds: int = 5
    idle_hold_seconds: int = 0  # 0: an idle partition's watermark follows the wall clock at once
    max_seen_ids: int = 2000
    outbox: int = 4  # contacts per customer whose events a redelivery may ask for again

    def window(self, channel: str | None) -> int:
        return self.windows.get(channel or "other", self.windows.get("other", 24 * HOUR))

    def target(self, channel: str | None) -> int:
        return self.sla_targets.get(channel or "other", self.sla_targets.get("other", HOUR))


@dataclass(frozen=True)
class Rules:
    identity: IdentityRules = field(default_factory=IdentityRules)
    stitch: StitchRules = field(default_factory=StitchRules)


def _pairs(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        out[k.strip()] = int(v)
    return out


def _words(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def rules_from_settings(settings: StreamsSettings) -> Rules:
    """The rules with every THREADLINE_IDENTITY_* / _STITCH_* / _SLA_* setting applied over the
    defaults (``settings.streams``: threadline.settings.StreamsSettings)."""
    ident, stitch, s = IdentityRules(), StitchRules(), settings
    ident = IdentityRules(
        hint_links=s.identity_hint_links,
        link_fact_kinds=frozenset(_words(s.identity_link_facts)) or ident.link_fact_kinds,
        limits=MappingProxyType({**ident.limits, **_pairs(s.identity_limits)}),
        priority=tuple(_words(s.identity_priority)) or ident.priority,
        blocked_values=ident.blocked_values | blocked_words(s.identity_blocked),
    )
    stitch = StitchRules(
        windows=MappingProxyType({**stitch.windows, **_pairs(s.stitch_windows)}),
        reopen_seconds=_or(s.stitch_reopen_seconds, stitch.reopen_seconds),
        retention_seconds=_or(s.stitch_retention_seconds, stitch.retention_seconds),
        sla_targets=MappingProxyType({**stitch.sla_targets, **_pairs(s.sla_targets)}),
        resolution_seconds=_or(s.sla_resolution_seconds, stitch.resolution_seconds),
        business_hours=BusinessHours.parse(s.sla_business_hours) if s.sla_business_hours else None,
        timer_grace_seconds=_or(s.sla_timer_grace_seconds, stitch.timer_grace_seconds),
        idle_seconds=_or(s.idle_seconds, stitch.idle_seconds),
        idle_hold_seconds=_or(s.idle_hold_seconds, stitch.idle_hold_seconds),
    )
    return Rules(ident, stitch)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
