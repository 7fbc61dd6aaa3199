"""SLA clocks (pure): first response, next response and resolution, in event time.

A clock is a small JSON dict so it can live in a table:

    {"kind": "first_response", "target": 900, "started": <ms>, "acc": <ms counted so far>,
     "since": <ms it runs from, or None while paused>, "state": "running" | "paused" | "hit" | "breached",
     "breach_emitted": bool}

Elapsed time is counted only inside business hours when they are configured (``BusinessHours``),
around the clock otherwise; a paused clock (waiting on the customer) does not count at all.
``due`` is the moment the running clock reaches its target, so a timer can breach it on time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from streams.rules import BusinessHours

MAX_DAYS = 3660  # a clock never looks further than ten years ahead


def _open_windows(start_ms: int, hours: BusinessHours):
    """Business-hour windows (start_ms, end_ms) from the day of ``start_ms`` on."""
    tz = ZoneInfo(hours.tz)
    day = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(tz).date()
    for _ in range(MAX_DAYS):
        if day.weekday() in hours.days:
            a = datetime.combine(day, hours.opens, tz)
            b = datetime.combine(day, hours.closes, tz)
            yield int(a.timestamp() * 1000), int(b.timestamp() * 1000)
        day += timedelta(days=1)


def elapsed_ms(a: int, b: int, hours: BusinessHours | None) -> int:
    """Counted milliseconds between ``a`` and ``b``."""
    if b <= a:
        return 0
    if hours is None:
        return b - a
    total = 0
    for lo, hi in _open_windows(a, hours):
        if lo >= b:
            break
        total += max(0, min(hi, b) - max(lo, a))
    return total


def add_ms(start: int, amount: int, hours: BusinessHours | None) -> int:
    """The moment when ``amount`` counted milliseconds have passed after ``start``."""
    if hours is None:
        return start + amount
    left = amount
    for lo, hi in _open_windows(start, hours):
        lo = max(lo, start)
        if hi <= lo:
            continue
        if left <= hi - lo:
            return lo + left
        left -= hi - lo
    raise ValueError("SLA due time lies beyond the business-hours horizon")


def new_clock(kind: str, target_s: int, at: int) -> dict:
    return {
        "kind": kind,
        "target": target_s,
        "started": at,
        "acc": 0,
        "since": at,
        "state": "running",
        "breach_emitted": False,
    }


def elapsed(clock: dict, at: int, hours: BusinessHours | None) -> int:
    """Counted ms of the clock up to ``at``."""
    running = elapsed_ms(clock["since"], at, hours) if clock["since"] is not None else 0
    return clock["acc"] + running


def due(clock: dict, hours: BusinessHours | None) -> int | None:
    """When the running clock reaches its target; None when it is not running."""
    if clock["state"] != "running" or clock["since"] is None:
        return None
    return add_ms(clock["since"], max(0, clock["target"] * 1000 - clock["acc"]), hours)


def pause(clock: dict, at: int, hours: BusinessHours | None) -> dict:
    if clock["state"] != "running":
        return clock
    return {**clock, "acc": elapsed(clock, at, hours), "since": None, "state": "paused"}


def resume(clock: dict, at: int) -> dict:
    if clock["state"] != "paused":
        return clock
    return {**clock, "since": at, "state": "running"}


def stop(clock: dict, at: int, hours: BusinessHours | None) -> tuple[dict, str | None]:
    """Stop the clock at ``at``: the event to emit (sla_hit / sla_breached) or None if a timer
    already reported the breach."""
    if clock["state"] in ("hit", "breached"):
        return clock, None
    spent = elapsed(clock, at, hours)
    met = spent <= clock["target"] * 1000
    done = {**clock, "acc": spent, "since": None, "state": "hit" if met else "breached"}
    if not met and clock["breach_emitted"]:
        return done, None
    return {**done, "breach_emitted": done["breach_emitted"] or not met}, "sla_hit" if met else "sla_breached"


def record(clock: dict, at: int, hours: BusinessHours | None) -> dict:
    """The clock as the conversation_event ``sla`` record, as of ``at``."""
    d = due(clock, hours)
    if d is None:  # stopped or paused: due as if it ran on from now
        d = add_ms(at, max(0, clock["target"] * 1000 - elapsed(clock, at, hours)), hours)
    return {
        "kind": clock["kind"],
        "target_seconds": clock["target"],
        "started_at": clock["started"],
        "due_at": d,
        "elapsed_seconds": elapsed(clock, at, hours) // 1000,
    }
