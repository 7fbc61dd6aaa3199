"""The read API (``threadline serve api``): JSON over HTTP on the read models.

One router per audience: ``customers`` (identity and contacts lookups, the customer card),
``support`` (timeline, conversations, inbox), ``sales`` (the 360 view), ``marketing``
(engagement, response times, reviews, consent, the consent ledger, segments), ``operations``
(projection lag), ``rights`` (right of access and erasure, admin only: docs/privacy.md);
their SQL is ``queries``, paging ``paging``, what they share ``reads``. This module assembles them.

Lists page with ``limit`` and either ``offset`` (``next_offset``) or ``cursor`` (``next_cursor``,
keyset: every row exactly once while the list grows). Unknown ids answer 404 with a JSON error;
bad parameters 400 naming them; a projection that was never built 503; PostgreSQL down 503
``postgres_unavailable`` with Retry-After, within POOL_TIMEOUT. OpenAPI at ``/openapi.json``
(``/docs``).

Every route but ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` needs a bearer token of
THREADLINE_API_TOKENS with the scope ``ROUTE_SCOPES`` names (threadline/auth.py): 401 without
one, 403 without the scope; ``admin`` reads everything.

A merged customer's old id answers with the survivor (``customer_id``) and says so
(``requested_id``); the survivor lists the ids merged into it (``merged_ids``).
"""

from __future__ import annotations

import time
import weakref
from contextlib import asynccontextmanager

import psycopg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from projectors.api import customers, marketing, operations, rights, sales, support
from projectors.api.paging import MAX_OFFSET, BadCursor
from projectors.api.reads import NotFound
from projectors.engine.schema import live_schema
from threadline import auth, ops, serving
from threadline.http import answers_json, error_response, guard, validation_fields
from threadline.settings import Settings

__all__ = ["MAX_OFFSET", "POOL_TIMEOUT", "ROUTE_SCOPES", "app_from_environment", "create_app"]

# PostgreSQL down: a request waits at most this long for a connection, then answers 503 with
# Retry-After (a client's or a provider's timeout is longer); the pool reconnects in the background.
POOL_TIMEOUT = 1.0
RETRY_AFTER = "5"
# A connection idle longer than this is checked (a round trip) before a request gets it; one in use
# moments ago is handed out as is (under load: every request, and the check was a quarter of the
# API's CPU). A connection broken meanwhile fails its request (503 postgres_unavailable) and is
# closed, as the check would have found.
CHECK_IDLE_SECONDS = 1.0

ROUTERS = (customers, support, sales, marketing, operations, rights)  # in this order: by-identity before {customer_id}

# Which audience may read what, by what each route returns: a customer's contacts, card, timeline
# and conversations, and the inbox are support's; the 360 view sales'; engagement, reviews,
# consent, the consent ledger and segments marketing's; projection lag (no customer data) any
# valid token's; the access bundle and erasure (whole customers, and a write) the admin's.
ROUTE_SCOPES = {path: scope for r in ROUTERS for path, scope in r.SCOPES.items()}


def app_from_environment() -> FastAPI:
    """The app of the settings of the environment (``threadline serve api`` with several workers:
    uvicorn's factory, called in each worker process)."""
    from threadline.commands import load_settings

    return create_app(load_settings(), served=True)


def create_app(settings: Settings, served: bool = False) -> FastAPI:
    """The read API on ``settings``; ``served``: in a server process of its own (``threadline
    serve api``), whose collector it tunes once started (threadline/serving.py)."""
    idle = IdleCheck(CHECK_IDLE_SECONDS)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(
            settings.effective_pg_api_dsn,
            # every connection opened at start: a pool that grows on demand makes the first requests of
            # a burst wait for new connections (past POOL_TIMEOUT on a busy machine: 503s)
            min_size=settings.endpoints.api_pool_size,
            max_size=settings.endpoints.api_pool_size,
            open=False,
            timeout=POOL_TIMEOUT,
            check=idle.check,
            reset=idle.returned,
            kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": 3},
        )
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        if served:
            serving.tune_gc()
        yield
        await pool.close()

    app = FastAPI(
        title="Threadline read API",
        version="2",
        lifespan=lifespan,
        description="Read models for support, sales and marketing, built from the event log.",
    )
    app.state.settings = settings
    app.state.schemas = {p: live_schema(settings, p) for p in ("support", "sales", "marketing")}
    auth.install(app, auth.api_tokens(settings), ROUTE_SCOPES, errors=(400, 404, 503))  # before the routes
    guard(app, "api")

    async def postgres_answers() -> None:
        """``select 1`` on a connection of the pool the routes use."""
        pool = getattr(app.state, "pool", None)
        if pool is None:
            raise RuntimeError("the connection pool is not open yet")
        async with pool.connection(timeout=ops.PROBE_TIMEOUT) as conn:
            await conn.execute("select 1")

    ops.install(app, "api", ops.Readiness("api", [ops.Check("postgres", postgres_answers)]))
    install_error_handlers(app)
    for r in ROUTERS:
        declare(app, r.router)
    return app


class IdleCheck:
    """The pool's ``check`` and ``reset`` callbacks: a connection returned less than ``seconds``
    ago is not checked again; one idle longer (or never returned) gets the pool's round trip."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._returned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def returned(self, conn) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn) -> None:
        at = self._returned.get(conn)
        if at is None or time.monotonic() - at > self.seconds:
            await AsyncConnectionPool.check_connection(conn)


def declare(app: FastAPI, router: APIRouter) -> None:
    """Declare ``router``'s routes on ``app`` itself, in order, as if written there: each gets the
    app's dependencies (the scope check, the NUL guard) and is one of ``app.routes``; the error
    answers a route documents (``responses``) stay documented. What a route returns is encoded by
    orjson (``answers_json``), not walked by FastAPI's ``jsonable_encoder`` first."""
    for route in router.routes:
        assert isinstance(route, APIRoute), route
        app.add_api_route(
            route.path,
            answers_json(route.endpoint),
            methods=sorted(route.methods),
            tags=route.tags,
            name=route.name,
            responses=route.responses,
        )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        return error_response(400, "invalid_parameters", "the request parameters are not valid", validation_fields(exc))

    @app.exception_handler(BadCursor)
    async def _bad_cursor(_req: Request, exc: BadCursor):
        return error_response(
            400,
            "invalid_parameters",
            "the request parameters are not valid",
            [{"field": "cursor", "problem": exc.problem}],
        )

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound):
        return error_response(404, "not_found", f"no {exc.what}")

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def _not_built(_req: Request, exc: psycopg.errors.UndefinedTable):
        return error_response(
            503, "projection_not_built", "the projection has not been built yet (run `threadline project`)"
        )

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def _postgres_unavailable(_req: Request, exc: Exception):
        response = error_response(503, "postgres_unavailable", "postgres is not answering; retry later")
        response.headers["Retry-After"] = RETRY_AFTER
        return response
