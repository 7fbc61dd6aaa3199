"""What the gateway answers to ``POST /webhooks/<connector>``, decided without any I/O.

``handle`` checks, in order: a known connector (404), the body size (413), the media type (415),
the signature (401; a connector whose secret is not configured answers 401 too), the provider's
shape (400 naming the field: not JSON, nested too deep, a lone surrogate, a missing field). What
passes is mapped: contacts to produce and rejected parts for ingest.dlq.v1 (a part that cannot be
mapped, and a signed body whose mapping failed in any other way: kept raw, never a 500). The gateway then produces and answers 202 once Kafka acknowledged all of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connectors.base import MapContext, Rejected, WebhookRequest
from connectors.contact import ContactIn
from connectors.errors import MalformedPayload
from connectors.table import CONNECTORS


@dataclass(frozen=True)
class Outcome:
    status: int
    error: str | None = None
    detail: str = ""
    fields: list[dict] | None = None
    contacts: list[ContactIn] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def handle(req: WebhookRequest, secrets: Mapping[str, str | None], ctx: MapContext, max_body_bytes: int) -> Outcome:
    connector = CONNECTORS.get(req.connector)
    if connector is None:
        return Outcome(
            404, "unknown_connector", f"no connector {req.connector!r}; known: {', '.join(sorted(CONNECTORS))}"
        )
    if len(req.body) > max_body_bytes:
        return Outcome(413, "body_too_large", f"body over {max_body_bytes} bytes")
    if req.content_type not in connector.media_types:
        return Outcome(415, "unsupported_media_type", f"send {' or '.join(connector.media_types)}")
    secret = secrets.get(connector.secret) if connector.secret else None
    if not secret:
        return Outcome(401, "not_configured", f"no signing secret configured for {connector.name}")
    try:
        signed = connector.verify(req, secret)
    except Exception:  # noqa: BLE001 (whatever a verifier trips over, the request is not signed)
        signed = False
    if not signed:
        return Outcome(401, "bad_signature", "the signature is missing or does not match")
    try:
        mapped = connector.parse(req, ctx)
    except MalformedPayload as exc:
        return Outcome(400, "invalid_body", f"the body is not a {connector.name} payload", exc.fields)
    except Exception as exc:  # noqa: BLE001 (signed by the provider: keep it, never drop it, never 500)
        return Outcome(202, rejected=[Rejected(f"mapping failed: {type(exc).__name__}", req.body)])
    contacts = [m for m in mapped if isinstance(m, ContactIn)]
    rejected = [m for m in mapped if isinstance(m, Rejected)]
    return Outcome(202, contacts=contacts, rejected=rejected)
