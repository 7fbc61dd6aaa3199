"""What every router of the read API shares: the connection pool's reads, the projection schema
of an audience, merged-customer resolution, and the JSON shape of values."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from fastapi import Request

from projectors.api import paging, queries
from projectors.api.queries import Order


class NotFound(Exception):
    def __init__(self, what: str):
        self.what = what


def schema(request: Request, projection: str) -> str:
    """The live schema of ``projection`` (support, sales, marketing) this app reads."""
    return request.app.state.schemas[projection]


async def rows(request: Request, sql: str, params=()) -> list[dict]:
    async with request.app.state.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return jsonable_rows(cur.description, await cur.fetchall())


async def rows_each(request: Request, queries: dict[str, str], params) -> dict[str, list[dict]]:
    """Several queries with the same parameters on one connection of the pool, sent in one
    pipeline (one round trip, one checkout): the rows of each by name."""
    async with request.app.state.pool.connection() as conn:
        async with conn.pipeline():
            cursors = {name: await conn.execute(sql, params) for name, sql in queries.items()}
        return {name: jsonable_rows(cur.description, await cur.fetchall()) for name, cur in cursors.items()}


async def one(request: Request, sql: str, params=()) -> dict | None:
    found = await rows(request, sql, params)
    return found[0] if found else None


async def resolve(request: Request, s: str, customer_id: str) -> str:
    """The customer ``customer_id`` stands for today (a merged id: its survivor); 404 if none."""
    row = await one(request, queries.resolve(s), {"customer_id": customer_id})
    if row is None:
        raise NotFound(f"customer {customer_id}")
    return row["customer_id"]


async def listed(
    request: Request, sql: str, order: Order, params: dict, *, limit: int, offset: int, cursor: str | None
) -> tuple[list[dict], str | None]:
    """One page of a list: its items and ``next_cursor``."""
    paged, after = paging.page_sql(sql, order, cursor, offset)
    found = await rows(request, paged, {**params, **after, "limit": limit, "offset": offset})
    return paging.split_keys(order, found, limit)


async def paged(
    request: Request, sql: str, order: Order, params: dict, *, limit: int, offset: int, cursor: str | None, **extra
) -> dict:
    """One page of a list as the API answers it: ``listed`` then ``page``."""
    items, after = await listed(request, sql, order, params, limit=limit, offset=offset, cursor=cursor)
    return page(items, limit, offset, after, cursor, **extra)


def page(
    items: list[dict], limit: int, offset: int, next_cursor: str | None, cursor: str | None = None, **extra
) -> dict:
    return {
        **extra,
        "items": items,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(items) == limit and cursor is None else None,
        "next_cursor": next_cursor,
    }


def _iso(value: datetime | date) -> str:
    return value.isoformat()


# The column types whose values ``jsonable`` converts, by type OID: timestamptz, timestamp, date,
# uuid, numeric (what PostgreSQL returns as datetime, date, UUID, Decimal).
CONVERTED_TYPES = {1184: _iso, 1114: _iso, 1082: _iso, 2950: str, 1700: float}


def jsonable_rows(description, found: list[dict]) -> list[dict]:
    """``jsonable`` of each of ``found`` (fresh rows of ``dict_row``, converted in place), converting
    only the columns whose type needs it (``description``: the cursor's): a page of 50 rows of 20
    columns is not 1,000 type checks."""
    convert = [(c.name, f) for c in description or () if (f := CONVERTED_TYPES.get(c.type_code))]
    if convert:
        for r in found:
            for name, f in convert:
                v = r[name]
                if v is not None:
                    r[name] = f(v)
    return found


def jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, (datetime, date)):
            v = v.isoformat()
        elif isinstance(v, uuid.UUID):
            v = str(v)
        elif isinstance(v, Decimal):
            v = float(v)
        out[k] = v
    return out
