"""Pages of the read API's lists.

Every list takes ``limit`` (1–500, default 50) and either ``offset`` (rows to skip, as before) or
``cursor``: the opaque ``next_cursor`` of the previous page. A cursor holds the order keys of the
last row it returned (keyset paging: ``queries.Order``), so paging through a list that grows
meanwhile yields every row that was there exactly once, in the list's stable order. It is
base64url JSON ``{"l": <list>, "k": [<keys>]}``; a cursor that does not decode, belongs to another
list, or holds keys of the wrong type is 400 ``invalid_parameters`` naming ``cursor``; a cursor
together with a non-zero offset is 400 too.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import date, datetime

from fastapi import Query

from projectors.api.queries import Order

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000
MAX_CURSOR = 2000  # characters
Limit = Query(50, ge=1, le=MAX_LIMIT, description="page size")
Offset = Query(0, ge=0, le=MAX_OFFSET, description="rows to skip (or use cursor)")
Cursor = Query(
    None,
    min_length=1,
    max_length=MAX_CURSOR,
    pattern=r"^[A-Za-z0-9_-]+$",
    description="next_cursor of the previous page: the page after it",
)


class BadCursor(Exception):
    def __init__(self, problem: str):
        self.problem = problem


def _check(cast: str, value) -> str:
    if not isinstance(value, str):
        raise BadCursor("not a cursor of this list")
    try:
        if cast == "timestamptz":
            if value not in ("infinity", "-infinity"):
                datetime.fromisoformat(value)
        elif cast == "date":
            date.fromisoformat(value)
        elif cast == "uuid":
            uuid.UUID(value)
        elif cast == "int":
            int(value)
    except ValueError:
        raise BadCursor("not a cursor of this list") from None
    if "\x00" in value:
        raise BadCursor("not a cursor of this list")
    return value


def encode(order: Order, keys: list[str]) -> str:
    raw = json.dumps({"l": order.name, "k": keys}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(order: Order, cursor: str) -> dict[str, str]:
    """The predicate's parameters (``c0``, ``c1``, ...) of a cursor of ``order``."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("not a cursor: use next_cursor of a previous page as it is") from None
    if not isinstance(data, dict) or data.get("l") != order.name:
        raise BadCursor("not a cursor of this list")
    keys = data.get("k")
    if not isinstance(keys, list) or len(keys) != len(order.keys):
        raise BadCursor("not a cursor of this list")
    return {f"c{i}": _check(k.cast, v) for i, (k, v) in enumerate(zip(order.keys, keys))}


def page_sql(sql: str, order: Order, cursor: str | None, offset: int) -> tuple[str, dict]:
    """``sql`` (a query with ``{keys}`` among its columns and a where clause) ordered by
    ``order``, after ``cursor``, with ``%(limit)s`` and ``%(offset)s``; and the cursor's parameters."""
    params: dict = {}
    if cursor is not None:
        if offset:
            raise BadCursor("give either cursor or offset, not both")
        params = decode(order, cursor)
        sql = f"{sql} and {order.after()}"
    return (
        sql.format(keys=order.key_columns()) + f" order by {order.order_by()} limit %(limit)s offset %(offset)s",
        params,
    )


def split_keys(order: Order, rows: list[dict], limit: int) -> tuple[list[dict], str | None]:
    """The rows without their key columns, and the cursor after the last one (None: no more)."""
    names = [f"_cursor_{i}" for i in range(len(order.keys))]
    last = [rows[-1][n] for n in names] if rows else None
    items = [{k: v for k, v in r.items() if k not in names} for r in rows]
    return items, (encode(order, last) if last is not None and len(rows) == limit else None)
