"""Data-subject rights (docs/privacy.md), admin only: the right-of-access bundle of a customer, and erasure.

Both take an identity (``kind:[platform:]value``) and act on the whole customer it belongs to
(``projectors/erasure.py``): the bundle is one JSON document, not a paged list; the erasure is a
write. 400 names the identity, 404 when no customer holds it, 409 ``privacy_off`` when sealing is
off (nothing could be shredded), 503 when PostgreSQL, Kafka or the key store does not answer.
"""

from __future__ import annotations

import json

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from projectors.api.reads import NotFound
from threadline.errors import ThreadlineError
from threadline.http import error_response, error_responses
from threadline.logging import get_logger

log = get_logger("threadline.api")

# whole customers, and a write: the admin's (docs/privacy.md)
SCOPES = {"/privacy/access": "admin", "/privacy/erasures": "admin"}

IDENTITY_PATTERN = r"^[^:]+:[\s\S]+$"  # kind:[platform:]value (schemas.privacy.parse_identity)

router = APIRouter()


class ErasureRequest(BaseModel):
    identity: str = Field(
        min_length=3,
        max_length=400,
        pattern=IDENTITY_PATTERN,
        description="kind:[platform:]value of any identity of the customer",
    )


@router.get(
    "/privacy/access",
    tags=["privacy"],
    responses=error_responses(400, 401, 403, 404, 503, _404="no customer holds the identity"),
)
async def privacy_access(
    request: Request,
    identity: str = Query(
        min_length=3,
        max_length=400,
        pattern=IDENTITY_PATTERN,
        description="kind:[platform:]value, e.g. email:giulia@example.it",
    ),
):
    """Right of access: one JSON bundle of what the read model holds about the customer of an
    identity: contacts, conversations, conversation events, identities, identity events, facts."""
    from projectors.erasure import NotFound as NoCustomer
    from projectors.erasure import run_export

    try:
        data = await run_in_threadpool(run_export, request.app.state.settings, identity)
    except ValueError as exc:
        return error_response(
            400,
            "invalid_parameters",
            "the request parameters are not valid",
            [{"field": "identity", "problem": str(exc)}],
        )
    except NoCustomer:
        raise NotFound("customer with that identity")
    except (psycopg.OperationalError, ThreadlineError) as exc:
        log.warning("privacy_access_unavailable", error=type(exc).__name__)
        return error_response(503, "unavailable", "the read model or the key store is not available; retry")
    return json.loads(json.dumps(data, default=str))


@router.post(
    "/privacy/erasures",
    tags=["privacy"],
    responses=error_responses(
        400,
        401,
        403,
        404,
        409,
        503,
        _404="no customer holds the identity",
        _400="not an identity",
        _409="privacy (sealing) is off: nothing could be shredded",
    ),
)
async def privacy_erase(request: Request, body: ErasureRequest):
    """Erase the customer of an identity (``threadline privacy erase``): the data keys of every
    identity of its component destroyed, its read-model rows dropped, its compacted keys
    tombstoned, an erased event written. The answer has ids and counts only. Needs the
    projections' owner role (THREADLINE_PG_DSN) and Kafka."""
    from projectors.erasure import NotFound as NoCustomer
    from projectors.erasure import PrivacyOff, run_erase

    try:
        report = await run_in_threadpool(run_erase, request.app.state.settings, body.identity, requested_by="api")
    except ValueError as exc:
        return error_response(
            400, "invalid_body", "the body does not name an identity", [{"field": "identity", "problem": str(exc)}]
        )
    except PrivacyOff as exc:
        return error_response(409, "privacy_off", str(exc))
    except NoCustomer:
        raise NotFound("customer with that identity")
    except (psycopg.OperationalError, ThreadlineError) as exc:
        log.warning("privacy_erasure_unavailable", error=type(exc).__name__)
        return error_response(
            503,
            "unavailable",
            "Kafka, PostgreSQL or the key store is not available; the erasure may be partial: send it again",
        )
    return report.as_json()
