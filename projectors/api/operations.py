"""Operations: each projector's lag (no customer data: any valid token), and /healthz (open)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from projectors.api.reads import jsonable
from threadline import auth

SCOPES = {"/projections": auth.ANY}
LAG_TTL = 2.0  # seconds a lag report is reused

router = APIRouter()


@router.get("/projections", tags=["operations"])
async def projections(request: Request):
    """Each projector's lag: events and seconds behind its topics (a report at most
    ``age_seconds`` old: one computation serves the calls of ``LAG_TTL`` seconds)."""
    from projectors.lag import LagCache, projection_lag

    state = request.app.state
    if getattr(state, "lag_cache", None) is None:
        settings = state.settings
        state.lag_cache = LagCache(lambda: projection_lag(settings, None, settings.effective_pg_api_dsn), LAG_TTL)
    lags, age = await run_in_threadpool(state.lag_cache.get)
    return {"items": [jsonable(vars(lag)) for lag in lags], "age_seconds": round(age, 3)}


@router.get("/healthz", tags=["operations"])
async def healthz():
    return {"status": "ok"}
