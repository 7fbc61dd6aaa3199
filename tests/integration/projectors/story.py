"""A small cast as the streams would publish it: Giulia (merged from an older id), Emre."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from projector_events import contact, conversation, identity, produce, sla
from projectors.engine.runner import Sources
from projectors.read_models import read_model_projector
from projectors.replay import end_offsets


@dataclass
class Story:
    giulia: str
    giulia_old: str
    emre: str
    conv_giulia: str
    conv_emre: str
    contacts: list
    conversations: list
    identities: list
    now: datetime


def build(u: str, now: datetime | None = None) -> Story:
    now = now or datetime.now(UTC).replace(microsecond=0)
    g, g_old, e = f"giulia-{u}", f"giulia-old-{u}", f"emre-{u}"
    tweet_at = now - timedelta(days=1)
    order = contact(
        g,
        f"{u}-order",
        "store",
        now - timedelta(days=12),
        event_type="order.placed",
        facts=[{"kind": "order_number", "value": "4711"}],
        identities=[{"kind": "email", "value": f"giulia.{u}@example.it"}, {"kind": "phone", "value": "+393471234567"}],
    )
    old_chat = contact(
        g_old,
        f"{u}-chat",
        "chat",
        now - timedelta(days=20),
        text="Buongiorno, una domanda",
        language="it",
        identities=[{"kind": "chat_visitor", "value": f"v-{u}"}],
    )
    tweet = contact(
        g,
        f"{u}-tweet",
        "twitter",
        tweet_at,
        text="Il mio ordine è arrivato rotto!",
        language="it",
        identities=[{"kind": "social", "value": f"giulia_{u}", "platform": "twitter"}],
    )
    dm = contact(
        g,
        f"{u}-dm",
        "twitter",
        tweet_at + timedelta(minutes=5),
        text="Numero ordine 4711",
        language="it",
        identities=[{"kind": "social", "value": f"giulia_{u}", "platform": "twitter"}],
        facts=[{"kind": "order_number", "value": "4711", "source": "text"}],
    )
    email = contact(
        g,
        f"{u}-email",
        "email",
        tweet_at + timedelta(minutes=40),
        text="Ecco la foto, sono molto delusa",
        language="it",
        identities=[{"kind": "email", "value": f"giulia.{u}@example.it"}],
        attachments=[{"name": "foto.jpg", "content_type": "image/jpeg"}],
    )
    call = contact(
        g,
        f"{u}-call",
        "voice",
        tweet_at + timedelta(hours=2),
        text="Chiamo per l'ordine rotto",
        language="it",
        identities=[{"kind": "phone", "value": "+393471234567"}],
    )
    review = contact(
        e,
        f"{u}-review",
        "review",
        now - timedelta(hours=5),
        text="Sipariş eksik geldi, kutu kırık",
        language="tr",
        metadata={"rating": "2"},
        identities=[{"kind": "social", "value": f"emre_{u}", "platform": "instagram"}],
        consent=[{"purpose": "marketing", "channel": "instagram", "granted": False}],
    )
    form = contact(
        e,
        f"{u}-form",
        "web_form",
        now - timedelta(days=3),
        text="Newsletter please",
        language="en",
        identities=[{"kind": "email", "value": f"emre.{u}@example.com.tr"}],
        consent=[
            {"purpose": "marketing", "channel": "instagram", "granted": True},
            {"purpose": "newsletter", "channel": "email", "granted": True},
        ],
    )
    cg, ce = f"conv-g-{u}", f"conv-e-{u}"
    convs = [
        conversation(g, cg, "opened", tweet_at, channel="twitter", contact_event_id=tweet["event_id"]),
        conversation(
            g,
            cg,
            "sla_started",
            tweet_at,
            channel="twitter",
            waiting_on="agent",
            sla=sla("first_response", tweet_at, 3600),
        ),
        conversation(g, cg, "message_appended", tweet_at, channel="twitter", contact_event_id=tweet["event_id"]),
        conversation(
            g,
            cg,
            "message_appended",
            dm["occurred_at"],
            channel="twitter",
            contact_event_id=dm["event_id"],
            facts=[{"kind": "order_number", "value": "4711"}],
        ),
        conversation(g, cg, "channel_switched", email["occurred_at"], channel="email", previous_channel="twitter"),
        conversation(
            g, cg, "message_appended", email["occurred_at"], channel="email", contact_event_id=email["event_id"]
        ),
        conversation(g, cg, "channel_switched", call["occurred_at"], channel="voice", previous_channel="email"),
        conversation(
            g,
            cg,
            "message_appended",
            call["occurred_at"],
            channel="voice",
            contact_event_id=call["event_id"],
            waiting_on="agent",
        ),
        conversation(e, ce, "opened", form["occurred_at"], channel="web_form", contact_event_id=form["event_id"]),
        conversation(
            e,
            ce,
            "sla_started",
            form["occurred_at"],
            channel="web_form",
            sla=sla("first_response", form["occurred_at"], 3600),
        ),
        conversation(
            e,
            ce,
            "sla_hit",
            form["occurred_at"] + timedelta(minutes=10),
            channel="web_form",
            sla=sla("first_response", form["occurred_at"], 3600, elapsed=600),
        ),
        conversation(e, ce, "resolved", form["occurred_at"] + timedelta(hours=1), channel="web_form"),
    ]
    ids = [
        identity(
            "observed",
            g,
            order["occurred_at"],
            identities=[{"kind": "account", "value": f"acct-{u}", "platform": "shop"}],
        ),
        identity("merged", g, tweet_at + timedelta(hours=3), related=[g_old]),
    ]
    return Story(g, g_old, e, cg, ce, [order, old_chat, tweet, dm, email, call, review, form], convs, ids, now)


def publish(settings, codec, sources: Sources, story: Story, garbage: list[bytes] = ()) -> None:
    produce(settings, codec, sources.contacts, "contact", story.contacts, raw=garbage)
    produce(settings, codec, sources.conversations, "conversation", story.conversations)
    produce(settings, codec, sources.identities, "identity", story.identities)


def project(settings, sources: Sources, projections=("support", "sales", "marketing"), codec=None) -> None:
    """Run each projector until it has read everything on its topics now."""
    targets = end_offsets(settings, sources.topics())
    for p in projections:
        read_model_projector(settings, p, sources=sources, codec=codec).run(stop_at=targets)
