"""What every Threadline HTTP service answers on bad input: a status and JSON naming the problem."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError


def error_response(status: int, error: str, detail: str, fields: list[dict] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict = {"error": error, "detail": detail}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def validation_fields(exc: ValidationError | RequestValidationError) -> list[dict]:
    """One entry per invalid field, named by its dotted path (``identities.0.kind``)."""
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        if isinstance(exc, RequestValidationError) and loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        loc = [str(p) for p in loc]
        out.append({"field": ".".join(loc) or "<body>", "problem": err["msg"]})
    return out
