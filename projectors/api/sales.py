"""Sales' route: the customer 360 for account work."""

from __future__ import annotations

from fastapi import APIRouter, Request

from projectors import definitions, judgements
from projectors.api import queries
from projectors.api.reads import NotFound, one, schema

SCOPES = {"/sales/customers/{customer_id}": "sales"}

router = APIRouter()


@router.get("/sales/customers/{customer_id}", tags=["sales"])
async def sales_context(customer_id: str, request: Request):
    """Customer 360 for account work, with the sentiment trend and "talk to support first"."""
    row = await one(request, queries.customer_360(schema(request, "sales")), {"customer_id": customer_id})
    if row is None:
        raise NotFound(f"customer {customer_id}")
    flag = judgements.talk_to_support_first(
        open_conversations=row["open_conversations"],
        breached_slas_7d=row["breached_slas_7d"],
        support_contacts_7d=row["support_contacts_7d"],
        sentiment_7d=row["sentiment_7d"],
        sentiment_prior_23d=row["sentiment_prior_23d"],
    )
    sentiment = definitions.Sentiment(
        row["sentiment_latest"], row["sentiment_7d"], row["sentiment_prior_23d"], row["sentiment_30d"]
    )
    return {
        **row,
        "requested_id": customer_id,
        "sentiment": sentiment.as_dict(),
        "sentiment_trend": sentiment.trend,
        "talk_to_support_first": flag.flag,
        "talk_to_support_first_reasons": flag.reasons,
    }
