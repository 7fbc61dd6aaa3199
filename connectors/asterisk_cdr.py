"""Asterisk call detail records (``threadline ingest asterisk-cdr FILE``), from the CSV that
``cdr_csv`` writes (``Master.csv``), columns in Asterisk's order:

    accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
    start, answer, end, duration, billsec, disposition, amaflags[, uniqueid[, userfield]]

One row is one ``voice`` contact: inbound when ``src`` is a phone number (the customer called),
outbound when ``dst`` is (an agent called out; ``src`` is then the agent's extension). A call
that ended in an IVR context (``dcontext`` containing ``ivr``, last application
``BackGround``/``Read``/``WaitExten``) is an ``ivr`` contact with the menu choice (``dst``).
Times are in ``cdr_timezone`` (UTC when cdr.conf has ``usegmtime=yes``). The provider id is the
``uniqueid``, or the SHA-256 of the row when the export has none, so a re-import keeps ids.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from connectors.base import MapContext, Rejected, build_contact
from connectors.contact import ContactIn
from connectors.errors import Unmappable
from connectors.normalize import phone_identity

NAME = "asterisk-cdr"
COLUMNS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)
REQUIRED = 16
IVR_APPS = {"background", "read", "waitexten"}


def _time(value: str, tz: str, column: str) -> datetime:
    try:
        naive = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise Unmappable(f"{column}: not a time in YYYY-MM-DD HH:MM:SS: {value[:30]!r}") from None
    return naive.replace(tzinfo=ZoneInfo(tz))


def row_to_contact(row: list[str], ctx: MapContext, raw_line: bytes) -> ContactIn:
    if len(row) < REQUIRED:
        raise Unmappable(f"{len(row)} columns, a CDR row has at least {REQUIRED}")
    r = dict(zip(COLUMNS, (c.strip() for c in row)))
    caller = phone_identity(r["src"], ctx.region, primary=True, strength="verified")
    callee = phone_identity(r["dst"], ctx.region, primary=True) if caller is None else None
    if caller is None and callee is None:
        raise Unmappable("neither src nor dst is a phone number")
    inbound = caller is not None
    ivr = "ivr" in r["dcontext"].lower() and r["lastapp"].lower() in IVR_APPS
    name = re.match(r'^\s*"([^"]*)"', r["clid"])
    meta = {k: r[k] for k in ("disposition", "dcontext", "lastapp", "channel", "accountcode") if r[k]}
    meta |= {"duration_s": r["duration"], "billsec": r["billsec"]}
    if ivr:
        meta["menu_choice"] = r["dst"]
    provider_id = r.get("uniqueid") or "sha256:" + hashlib.sha256(raw_line.strip()).hexdigest()
    return build_contact(
        {
            "provider_id": provider_id,
            "connector": NAME,
            "channel": "ivr" if ivr else "voice",
            "direction": "inbound" if inbound else "outbound",
            "occurred_at": _time(r["start"], ctx.cdr_timezone, "start"),
            "actor": {
                "role": "customer" if inbound else "agent",
                "id": None if inbound else r["src"] or None,
                "display_name": name.group(1) or None if name and inbound else None,
            },
            "identities": [caller or callee],
            "thread": {"call_id": r.get("uniqueid") or None},
            "metadata": meta,
        },
        ctx,
    )


def records(data: bytes, ctx: MapContext) -> Iterator[tuple[str, int, ContactIn | Rejected]]:
    offset = 0
    for n, line in enumerate(data.splitlines(keepends=True), start=1):
        offset += len(line)
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield where, offset, Rejected("not UTF-8", line, where)
            continue
        row = next(csv.reader(io.StringIO(text)), [])
        if n == 1 and row and row[0].strip().lower() == "accountcode":
            continue  # a header row
        try:
            yield where, offset, row_to_contact(row, ctx, line)
        except Unmappable as exc:
            yield where, offset, Rejected(exc.reason, line, where)
