"""How the read API serves a request, without PostgreSQL: what a route returns is encoded by orjson
(not walked by FastAPI's jsonable_encoder first) to the JSON Starlette would write; every
dependency of every route is a coroutine (a plain function runs in FastAPI's thread pool: a
thread hand-off per request); the pool checks a connection only when it has been idle."""

from __future__ import annotations

import asyncio
import inspect
import json
from datetime import UTC, datetime
from decimal import Decimal

import fastapi.routing
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from projectors.api import IdleCheck, declare
from threadline import auth
from threadline.http import guard

TOKEN = "t" * 24
SALES = "s" * 24
BODY = {
    "customer_id": "c-1",
    "at": datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC).isoformat(),
    "text": 'Grüße, 注文 \u2028 "quoted"',
    "sentiment": -0.25,
    "items": [{"n": 1, "ok": True, "none": None}],
}


def app_with(endpoint) -> FastAPI:
    app = FastAPI()
    auth.install(
        app,
        auth.Tokens.parse(f"support={TOKEN}\nsales={SALES}", what="api_tokens", allowed=auth.AUDIENCES),
        {"/x": "support"},
    )
    guard(app, "api")
    router = APIRouter()
    router.get("/x")(endpoint)
    declare(app, router)
    return app


def test_a_routes_answer_is_encoded_once_without_jsonable_encoder(monkeypatch):
    async def x():
        return {**BODY, "decimal": Decimal("1.5")}

    walked = []
    real = fastapi.routing.jsonable_encoder
    monkeypatch.setattr(fastapi.routing, "jsonable_encoder", lambda v, *a, **k: walked.append(v) or real(v, *a, **k))
    with TestClient(app_with(x)) as client:
        r = client.get("/x", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {**BODY, "decimal": 1.5}
    assert walked == []
    starlette = json.dumps(BODY, ensure_ascii=False, separators=(",", ":")).encode()
    assert fastapi.responses.JSONResponse(BODY).body == starlette
    from threadline.http import FastJson

    assert FastJson(BODY).body == starlette  # the same bytes


def test_the_scope_check_still_answers_401_and_403():
    async def x():
        return {}

    with TestClient(app_with(x)) as client:
        assert client.get("/x").status_code == 401
        assert client.get("/x", headers={"authorization": f"Bearer {'u' * 24}"}).status_code == 401
        forbidden = client.get("/x", headers={"authorization": f"Bearer {SALES}"})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"


def test_every_dependency_of_a_route_is_a_coroutine():
    async def x():
        return {}

    app = app_with(x)
    calls = []

    def walk(dependant):
        for d in dependant.dependencies:
            if d.call is not None:
                calls.append(d.call)
            walk(d)

    for route in app.routes:
        if isinstance(route, fastapi.routing.APIRoute) and route.path == "/x":
            walk(route.dependant)
    assert len(calls) >= 2  # the scope check and the NUL guard
    assert all(inspect.iscoroutinefunction(c) for c in calls), [c for c in calls if not inspect.iscoroutinefunction(c)]


class FakeConnection:
    autocommit = True

    def __init__(self):
        self.round_trips = 0

    async def execute(self, sql):
        self.round_trips += 1


def test_the_pool_checks_a_connection_only_when_it_was_idle():
    async def run():
        check = IdleCheck(0.05)
        conn = FakeConnection()
        await check.check(conn)  # never returned: checked
        assert conn.round_trips == 1
        await check.returned(conn)
        await check.check(conn)  # just returned: handed out as is
        assert conn.round_trips == 1
        await asyncio.sleep(0.1)
        await check.check(conn)  # idle longer than 0.05 s: checked
        assert conn.round_trips == 2

    asyncio.run(run())


def test_rows_are_converted_by_column_type_as_jsonable_converts_each_value():
    import uuid
    from datetime import date
    from types import SimpleNamespace

    from projectors.api.reads import jsonable, jsonable_rows

    def column(name, oid):
        return SimpleNamespace(name=name, type_code=oid)

    description = [
        column("at", 1184),
        column("naive", 1114),
        column("day", 1082),
        column("id", 2950),
        column("score", 1700),
        column("text", 25),
        column("tags", 1009),
    ]
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    rows = [
        {
            "at": at,
            "naive": datetime(2026, 1, 2, 3, 4, 5, 6),
            "day": date(2026, 11, 30),
            "id": uuid.UUID(int=7),
            "score": Decimal("-0.25"),
            "text": "x",
            "tags": ["a"],
        },
        {"at": None, "naive": None, "day": None, "id": None, "score": None, "text": None, "tags": None},
    ]
    expected = [jsonable(dict(r)) for r in rows]
    assert jsonable_rows(description, rows) == expected
    assert expected[0]["at"] == at.isoformat() and expected[0]["score"] == -0.25
