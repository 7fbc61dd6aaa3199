"""What every Threadline HTTP service answers on bad input: a status and JSON naming the problem.

* ``error_response``: ``{"error": <code>, "detail": <text>, "fields": [{"field", "problem"}]}``;
  at most ``MAX_FIELDS`` fields are listed (``fields_omitted`` counts the rest) and each field
  name is cut at ``MAX_FIELD_CHARS``, so a body with 60k unknown fields gets a small answer.
* ``load_json``: JSON that is also safe to carry on: nested at most ``MAX_JSON_DEPTH`` deep, no
  lone surrogate (``\\ud800``, which UTF-8 cannot encode) in any key or string; ``BadJson`` names
  where it is not.
* ``ServerErrors``: ASGI middleware; an unexpected exception answers a JSON 500 and is logged by
  its type and route only (an exception's message may quote the input: an identity, a text).
* ``ERROR_SCHEMA`` and ``error_responses``: the error answers, for the OpenAPI documents.
"""

from __future__ import annotations

import json

import orjson
import re
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

MAX_FIELDS = 20
MAX_FIELD_CHARS = 200
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def error_response(
    status: int, error: str, detail: str, fields: list[dict] | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict = {"error": error, "detail": detail}
    if fields is not None:
        body["fields"] = [{**f, "field": _cut(str(f.get("field", "")))} for f in fields[:MAX_FIELDS]]
        if len(fields) > MAX_FIELDS:
            body["fields_omitted"] = len(fields) - MAX_FIELDS
    return JSONResponse(body, status_code=status, headers=headers)


class FastJson(Response):
    """A JSON answer encoded by orjson (the bytes Starlette's ``JSONResponse`` writes, in a tenth of
    the time, and without FastAPI's ``jsonable_encoder`` walk before it); what orjson cannot encode
    itself (a Decimal, a set, a pydantic model) goes through ``jsonable_encoder``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_encodable, option=orjson.OPT_NON_STR_KEYS)


def _encodable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    out = jsonable_encoder(value)
    if out is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return out


def answers_json(endpoint):
    """``endpoint`` (a coroutine function) answering ``FastJson`` of what it returns, unless that is
    a Response already. FastAPI reads the parameters of the wrapped function (``__wrapped__``)."""
    import functools

    @functools.wraps(endpoint)
    async def answering(*args, **kwargs):
        out = await endpoint(*args, **kwargs)
        return out if isinstance(out, Response) else FastJson(out)

    return answering


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "…"


def validation_fields(exc: ValidationError | RequestValidationError) -> list[dict]:
    """One entry per invalid field, named by its dotted path (``identities.0.kind``)."""
    out = []
    for err in exc.errors(include_input=False, include_url=False) if isinstance(exc, ValidationError) else exc.errors():
        loc = list(err["loc"])
        if isinstance(exc, RequestValidationError) and loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        loc = [str(p) for p in loc]
        out.append({"field": ".".join(loc) or "<body>", "problem": err["msg"]})
    return out


class BadJson(ValueError):
    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


def load_json(raw: bytes | str) -> Any:
    """Parsed JSON, or BadJson naming the field: not JSON, nested deeper than MAX_JSON_DEPTH,
    or a lone surrogate in a key or string."""
    obj = _loads(raw)
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    surrogates = bool(_ESCAPED_SURROGATE.search(data))
    if not surrogates and data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
        return obj  # fewer brackets than the limit, nothing to walk for (a webhook's usual body)
    stack: list[tuple[Any, int, tuple]] = [(obj, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise BadJson(_path(path), f"nested deeper than {MAX_JSON_DEPTH} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if surrogates and isinstance(key, str) and _SURROGATE.search(key):
                    raise BadJson(_path(path), "a key holds a lone surrogate (not encodable as UTF-8)")
                stack.append((value, depth + 1, (*path, key)))
        elif surrogates and isinstance(node, str) and _SURROGATE.search(node):
            raise BadJson(_path(path), "a lone surrogate (not encodable as UTF-8)")
    return obj


# 19 digits in a row: maybe an integer orjson would read as a float (beyond 64 bits), json exactly.
_LONG_DIGITS = re.compile(rb"\d{19}")


def _loads(raw: bytes | str) -> Any:
    """``json.loads(raw)``'s object or error (BadJson). A body in bytes is read by orjson first, in a
    fifth of the time; what orjson refuses (a lone surrogate, NaN, UTF-16, a byte order mark,
    more than 1,024 levels) is read by json as before, and a body with 19 digits in a row too."""
    if isinstance(raw, bytes) and not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _std_loads(raw)


def _std_loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadJson("<body>", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadJson("<body>", f"not JSON: {exc}") from None


def _path(path: tuple) -> str:
    return (
        _cut(".".join(str(p).encode("utf-8", "replace").decode() if isinstance(p, str) else str(p) for p in path))
        or "<body>"
    )


class ServerErrors:
    """ASGI middleware: an exception no handler answered becomes a JSON 500, logged with its
    type and the route template only, and is not raised further (so no server logs its
    message or traceback: pydantic's and psycopg's messages quote the values)."""

    def __init__(self, app, name: str):
        self.app, self.name = app, name

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 (the last line of defence)
            from threadline.logging import get_logger

            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            get_logger("threadline.http").error(
                "unhandled_error",
                component=self.name,
                route=route,
                method=scope.get("method"),
                error_type=type(exc).__name__,
            )
            if not started:
                await error_response(500, "internal_error", "an unexpected error; it was logged")(scope, receive, send)


# -- OpenAPI ------------------------------------------------------------------------------------
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a stable code: invalid_body, unauthenticated, ..."},
        "detail": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {
                    "field": {"type": "string", "description": "dotted path (identities.0.value)"},
                    "problem": {"type": "string"},
                },
            },
        },
        "fields_omitted": {"type": "integer", "description": f"fields not listed (at most {MAX_FIELDS} are)"},
    },
}
ERROR_TEXT = {
    400: "bad input: JSON naming each bad field",
    401: "no valid credential (send Authorization: Bearer <token>)",
    403: "the credential does not allow this",
    404: "not found",
    413: "body too large",
    415: "unsupported media type",
    503: "a dependency (Kafka, PostgreSQL, a projection) is not available: retry",
}


def error_responses(*statuses: int, **texts: str) -> dict:
    """``responses=`` of a route: each status with the error body (``texts``: ``_404="..."``)."""
    return {
        s: {
            "description": texts.get(f"_{s}", ERROR_TEXT.get(s, "error")),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def document_errors(openapi: dict) -> dict:
    """Put ``Error`` in the components, and answer 400 instead of FastAPI's 422 everywhere
    (the apps answer bad parameters with 400)."""
    openapi.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for schemas in ("HTTPValidationError", "ValidationError"):
        openapi["components"]["schemas"].pop(schemas, None)
    for ops in openapi.get("paths", {}).values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", error_responses(400)[400])
    return openapi


def extend_openapi(app, change) -> None:
    """Apply ``change(schema)`` once to the app's OpenAPI document, after what came before."""
    previous = app.openapi

    def openapi() -> dict:
        schema = previous()
        if change not in applied:
            applied.append(change)
            change(schema)
        return schema

    applied: list = []
    app.openapi = openapi


async def no_nul_parameters(request: Request) -> None:
    """FastAPI dependency: 400 naming the parameter whose value holds a NUL (``%00``), which
    PostgreSQL cannot take in text. A coroutine: FastAPI runs a plain function in its thread pool
    (a thread hand-off per request for a check of microseconds)."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if isinstance(value, str) and "\x00" in value:
            raise ParameterError(name, "holds a NUL character (%00)")


class ParameterError(Exception):
    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


def guard(app, name: str) -> None:
    """What every Threadline read service installs (before its routes are declared): unexpected
    errors answered as JSON 500 without their message in the logs, NUL in a parameter → 400,
    and 400 rather than 422 in the OpenAPI document."""
    from fastapi import Depends

    app.add_middleware(ServerErrors, name=name)
    app.router.dependencies.append(Depends(no_nul_parameters))
    install_method_not_allowed(app)

    @app.exception_handler(ParameterError)
    async def _bad_parameter(_req, exc: ParameterError):
        return error_response(
            400,
            "invalid_parameters",
            "the request parameters are not valid",
            [{"field": exc.field, "problem": exc.problem}],
        )

    extend_openapi(app, document_errors)


def install_method_not_allowed(app) -> None:
    """405 as a JSON error whose ``Allow`` lists every method the path answers (Starlette's own
    lists only those of the first route that matched the path)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.routing import Match

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        if exc.status_code != 405:
            return error_response(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)
        methods = set()
        for route in app.router.routes:
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match != Match.NONE and getattr(route, "methods", None):
                methods |= set(route.methods)
        allow = ", ".join(sorted(methods))
        return error_response(405, "method_not_allowed", f"use {allow}", headers={"Allow": allow})
