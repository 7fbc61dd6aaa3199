"""The read API (``threadline serve api``): JSON over HTTP on the read models.

The foundation serves the skeleton's contacts; the audience read models add their routes.
Unknown ids answer 404 with a JSON error; malformed ids 400 naming the parameter.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from threadline.http import error_response, validation_fields
from threadline.settings import Settings

CONTACT_COLUMNS = ("event_id, customer_id, connector, channel, direction, occurred_at, recorded_at, text, "
                   "record->'facts' as facts, record->'identities' as identities, "
                   "source_topic, source_partition, source_offset")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(settings.effective_pg_dsn, min_size=1, max_size=8, open=False,
                                   kwargs={"row_factory": dict_row, "autocommit": True})
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        yield
        await pool.close()

    app = FastAPI(title="Threadline read API", version="1", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        return error_response(400, "invalid_parameters", "the request parameters are not valid",
                              validation_fields(exc))

    @app.get("/contacts/{event_id}")
    async def get_contact(event_id: str, request: Request):
        try:
            uuid.UUID(event_id)
        except ValueError:
            return error_response(400, "invalid_parameters", "event_id is not a UUID",
                                  [{"field": "event_id", "problem": "not a UUID"}])
        async with request.app.state.pool.connection() as conn:
            row = await (await conn.execute(f"select {CONTACT_COLUMNS} from skeleton.contacts where event_id = %s",
                                            (event_id,))).fetchone()
        if row is None:
            return error_response(404, "not_found", f"no contact {event_id}")
        return _jsonable(row)

    @app.get("/customers/{customer_id}/contacts")
    async def customer_contacts(customer_id: str, request: Request,
                                limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
        async with request.app.state.pool.connection() as conn:
            rows = await (await conn.execute(
                f"select {CONTACT_COLUMNS} from skeleton.contacts where customer_id = %s"
                " order by occurred_at, event_id limit %s offset %s", (customer_id, limit, offset))).fetchall()
        if not rows and offset == 0:
            return error_response(404, "not_found", f"no customer {customer_id}")
        return {"customer_id": customer_id, "items": [_jsonable(r) for r in rows], "limit": limit, "offset": offset}

    @app.get("/contacts")
    async def list_contacts(request: Request, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
        async with request.app.state.pool.connection() as conn:
            rows = await (await conn.execute(
                f"select {CONTACT_COLUMNS} from skeleton.contacts order by occurred_at, event_id limit %s offset %s",
                (limit, offset))).fetchall()
        return {"items": [_jsonable(r) for r in rows], "limit": limit, "offset": offset}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        out[k] = v.isoformat() if hasattr(v, "isoformat") else (str(v) if isinstance(v, uuid.UUID) else v)
    return out
