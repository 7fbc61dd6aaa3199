"""Every connector the gateway serves, by the name in ``POST /webhooks/<name>``."""

from __future__ import annotations

from connectors import agent, chat, email, meta, review, shopify, twilio, twilio_voice, web_form, x
from connectors.base import Connector

CONNECTORS: dict[str, Connector] = {
    c.name: c
    for c in (
        twilio.CONNECTOR,
        twilio_voice.CONNECTOR,
        meta.CONNECTOR,
        x.CONNECTOR,
        email.CONNECTOR,
        chat.CONNECTOR,
        review.CONNECTOR,
        web_form.CONNECTOR,
        shopify.CONNECTOR,
        agent.CONNECTOR,
    )
}

# The settings that hold each signing secret (a secret may serve several connectors).
SECRET_NAMES: tuple[str, ...] = tuple(
    sorted({c.secret for c in CONNECTORS.values() if c.secret} | {"meta_verify_token"})
)
