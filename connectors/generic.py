"""What Threadline's own JSON webhooks share (chat, review, web-form, agent, email).

They are signed with ``X-Threadline-Signature: sha256=<hex HMAC-SHA256(webhook secret, raw body)>``
and validated by a pydantic model: a body that does not match gets 400 naming every bad field.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from connectors.base import WebhookRequest, json_body
from connectors.errors import MalformedPayload
from connectors.signatures import same, threadline_signature

M = TypeVar("M", bound=BaseModel)


def verify(req: WebhookRequest, secret: str) -> bool:
    return same(req.headers.get("x-threadline-signature"), threadline_signature(req.body, secret))


def validated(model: type[M], req: WebhookRequest) -> M:
    body = json_body(req)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "<body>", "problem": e["msg"]} for e in exc.errors()]
        raise MalformedPayload(fields[0]["field"], fields[0]["problem"], more=fields[1:]) from None


def parser(model: type[M], to_contact):
    """The ``parse`` of a generic connector: validate the body, map it, reject what cannot be mapped."""
    from connectors.base import Rejected
    from connectors.errors import Unmappable

    def parse(req: WebhookRequest, ctx):
        body = validated(model, req)
        try:
            return [to_contact(body, ctx)]
        except Unmappable as exc:
            return [Rejected(exc.reason, req.body)]

    return parse
