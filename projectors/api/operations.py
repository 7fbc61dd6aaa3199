"""Operations: each projector's lag (no customer data: any valid token), and /healthz (open)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from projectors.api.reads import jsonable
from threadline import auth

SCOPES = {"/projections": auth.ANY}

router = APIRouter()


@router.get("/projections", tags=["operations"])
async def projections(request: Request):
    """Each projector's lag: events and seconds behind its topics."""
    from projectors.lag import projection_lag

    settings = request.app.state.settings
    lags = await run_in_threadpool(projection_lag, settings, None, settings.effective_pg_api_dsn)
    return {"items": [jsonable(vars(lag)) for lag in lags]}


@router.get("/healthz", tags=["operations"])
async def healthz():
    return {"status": "ok"}
