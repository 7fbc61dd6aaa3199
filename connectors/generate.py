"""``threadline generate``: synthetic but realistic traffic from a seeded population.

Pure part: ``population`` (customers with several identities each, in Italian, Polish, Dutch,
Turkish and English) and ``journeys`` (each customer switches channels the way real customers
do: a public post first, then a DM with the order number, an email with a photo, a call; or a
web form then a chat; or a WhatsApp message; agents answer on the same channel). ``render``
turns every step into the provider's own webhook: the body and the path, signed later with the
configured secrets. Edges: ``send_http`` posts them to the gateway at a chosen rate;
``send_direct`` maps them with the same connectors in-process and produces them.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import urlencode

LANGS = ("it", "pl", "nl", "tr", "en")
PEOPLE = {
    "it": [("Giulia", "Rossi"), ("Marco", "Bianchi"), ("Chiara", "Ferrari")],
    "pl": [("Kasia", "Nowak"), ("Piotr", "Kowalski"), ("Anna", "Wiśniewska")],
    "nl": [("Sanne", "de Vries"), ("Daan", "Jansen"), ("Lotte", "Bakker")],
    "tr": [("Emre", "Kaya"), ("Elif", "Demir"), ("Mehmet", "Yılmaz")],
    "en": [("Tom", "Baker"), ("Olivia", "Smith"), ("Harry", "Jones")],
}
PHONE = {"it": ("+39347", 7), "pl": ("+48601", 6), "nl": ("+316", 8), "tr": ("+90532", 7), "en": ("+447700", 6)}
DOMAIN = {"it": "example.it", "pl": "example.pl", "nl": "example.nl", "tr": "example.com.tr", "en": "example.co.uk"}
SAY = {
    "it": {
        "post": "@Shop il mio ordine è arrivato rotto, il pacco era aperto!",
        "dm": "Il numero dell'ordine è {order}, potete aiutarmi?",
        "email": "Vi mando la foto del pacco, ordine {order}.",
        "call": "Buongiorno, chiamo per l'ordine {order} arrivato rotto.",
        "form": "Vorrei un'assicurazione sci per tutta la famiglia.",
        "chat": "Ho già compilato il modulo, perché me lo chiedete di nuovo?",
        "review": "Consegna veloce, prodotto perfetto. Grazie!",
        "agent": "Ci dispiace molto, ce ne occupiamo subito.",
        "closing": "Cordiali saluti,",
    },
    "pl": {
        "post": "@Shop paczka przyszła uszkodzona, co mam teraz zrobić?",
        "dm": "Numer zamówienia to {order}, proszę o pomoc.",
        "email": "W załączniku zdjęcie paczki, zamówienie {order}.",
        "call": "Dzień dobry, dzwonię w sprawie zamówienia {order}.",
        "form": "Chciałabym ubezpieczenie narciarskie dla całej rodziny.",
        "chat": "Już wypełniłam formularz, dlaczego znowu pytacie?",
        "review": "Szybka dostawa, wszystko w porządku. Dziękuję!",
        "agent": "Bardzo przepraszamy, zaraz się tym zajmiemy.",
        "closing": "Pozdrawiam,",
    },
    "nl": {
        "post": "@Shop mijn pakket is nog steeds niet bezorgd, wat is er aan de hand?",
        "dm": "Mijn bestelling is {order}, kunnen jullie even kijken?",
        "email": "Hierbij de foto van het pakket, bestelling {order}.",
        "call": "Goedemiddag, ik bel over bestelling {order}.",
        "form": "Ik wil graag een skiverzekering voor het hele gezin.",
        "chat": "Ik heb het formulier al ingevuld, waarom vragen jullie het opnieuw?",
        "review": "Snelle levering, alles was in orde. Bedankt!",
        "agent": "Excuses voor het ongemak, we zoeken het meteen uit.",
        "closing": "Met vriendelijke groet,",
    },
    "tr": {
        "post": "@Shop siparişim eksik geldi, bir ürün kutuda yoktu!",
        "dm": "Sipariş numaram {order}, yardımcı olur musunuz?",
        "email": "Paketin fotoğrafını ekte gönderiyorum, sipariş {order}.",
        "call": "Merhaba, {order} numaralı sipariş için arıyorum.",
        "form": "Bütün aile için kayak sigortası istiyorum.",
        "chat": "Formu zaten doldurdum, neden tekrar soruyorsunuz?",
        "review": "Hızlı kargo, çok memnun kaldım. Teşekkürler!",
        "agent": "Yaşadığınız sorun için özür dileriz, hemen ilgileniyoruz.",
        "closing": "Saygılarımla,",
    },
    "en": {
        "post": "@Shop my order arrived with a cracked screen, not happy!",
        "dm": "My order number is {order}, can you help?",
        "email": "Attached is a photo of the parcel, order {order}.",
        "call": "Hi, I'm calling about order {order}, nobody got back to me.",
        "form": "I'd like ski insurance for the whole family.",
        "chat": "I already filled in that form, why are you asking again?",
        "review": "Fast delivery, all good. Thanks!",
        "agent": "We're sorry about this, we're on it right away.",
        "closing": "Best regards,",
    },
}
BUSINESS = {
    "phone": "+390287654321",
    "email": "support@shop.example",
    "x_id": "4337869213",
    "page": "104857392817465",
    "ig": "17841405822304914",
    "waba": "102290129340398",
}


@dataclass(frozen=True)
class Customer:
    n: int
    first: str
    last: str
    lang: str
    email: str
    phone: str
    handle: str
    x_id: str
    psid: str
    visitor: str
    order: str


@dataclass(frozen=True)
class Step:
    at: datetime
    customer: Customer
    kind: str  # post, dm, email, call, form, chat, review, whatsapp, order, agent
    channel: str
    reply_to: str | None = None  # provider id the agent answers
    extra: dict = field(default_factory=dict)


def population(n: int, seed: int = 42) -> list[Customer]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = LANGS[i % len(LANGS)]
        first, last = PEOPLE[lang][(i // len(LANGS)) % len(PEOPLE[lang])]
        prefix, digits = PHONE[lang]
        local = f"{first}.{last}".lower().replace(" ", "").replace("ś", "s").replace("ı", "i")
        out.append(
            Customer(
                n=i,
                first=first,
                last=last,
                lang=lang,
                email=f"{local}{i}@{DOMAIN[lang]}",
                phone=f"{prefix}{rng.randrange(10 ** (digits - 1), 10**digits)}",
                handle=f"{first.lower()}_{last[0].lower()}{i}",
                x_id=str(3_000_000_000 + i * 7919 + rng.randrange(7919)),
                psid=str(6_800_000_000_000_000 + i * 104729 + rng.randrange(104729)),
                visitor=f"v-{rng.getrandbits(32):08x}",
                order=str(100000 + rng.randrange(900000)),
            )
        )
    return out


JOURNEYS = (
    ("post", "dm", "email", "call"),  # Giulia's: social first, then a DM, an email, a call
    ("order", "whatsapp", "call"),
    ("form", "chat"),  # Sanne's: a form, then "I already filled in that form"
    ("review",),  # Emre's
    ("order", "post", "dm"),
)
CHANNEL = {
    "post": "twitter",
    "dm": "twitter",
    "email": "email",
    "call": "voice",
    "form": "web_form",
    "chat": "chat",
    "review": "review",
    "whatsapp": "whatsapp",
    "order": "store",
}


def journeys(
    customers: list[Customer], seed: int = 42, start: datetime | None = None, agents: bool = True
) -> list[Step]:
    """Every customer's steps (with agents' answers), sorted by event time."""
    rng = random.Random(seed + 1)
    t0 = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    steps: list[Step] = []
    for c in customers:
        at = t0 + timedelta(minutes=rng.randrange(0, 600))
        for kind in JOURNEYS[c.n % len(JOURNEYS)]:
            at += timedelta(minutes=rng.randrange(5, 180))
            step = Step(at, c, kind, CHANNEL[kind])
            steps.append(step)
            if agents and kind in ("post", "dm", "email", "chat", "whatsapp", "review") and rng.random() < 0.8:
                steps.append(
                    Step(
                        at + timedelta(minutes=rng.randrange(1, 90)),
                        c,
                        "agent",
                        CHANNEL[kind],
                        reply_to=provider_id(step),
                    )
                )
    return sorted(steps, key=lambda s: (s.at, s.customer.n, s.kind))


def provider_id(step: Step) -> str:
    return f"gen-{step.customer.n}-{step.kind}-{int(step.at.timestamp())}"


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _post(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    body = {
        "for_user_id": BUSINESS["x_id"],
        "tweet_create_events": [
            {
                "created_at": step.at.strftime("%a %b %d %H:%M:%S +0000 %Y"),
                "id_str": pid.replace("gen-", "9"),
                "text": text,
                "user": {"id_str": c.x_id, "screen_name": c.handle, "name": f"{c.first} {c.last}"},
            }
        ],
    }
    return "x", json.dumps(body).encode()


def _dm(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    body = {
        "for_user_id": BUSINESS["x_id"],
        "direct_message_events": [
            {
                "type": "message_create",
                "id": pid,
                "created_timestamp": str(_ms(step.at)),
                "message_create": {
                    "target": {"recipient_id": BUSINESS["x_id"]},
                    "sender_id": c.x_id,
                    "message_data": {"text": text},
                },
            }
        ],
        "users": {c.x_id: {"id": c.x_id, "screen_name": c.handle, "name": f"{c.first} {c.last}"}},
    }
    return "x", json.dumps(body).encode()


def _email(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg["From"] = f"{c.first} {c.last} <{c.email}>"
    msg["To"] = BUSINESS["email"]
    msg["Subject"] = f"Order {c.order}"
    msg["Date"] = format_datetime(step.at)
    msg["Message-ID"] = f"<{pid}@{DOMAIN[c.lang]}>"
    msg.set_content(f"{text}\n\n{say['closing']}\n{c.first} {c.last}\nTel. {c.phone}\n")
    msg.add_attachment(b"\xff\xd8\xff\xe0 photo", maintype="image", subtype="jpeg", filename="parcel.jpg")
    msg.set_boundary(f"=={pid}==")  # deterministic bytes per seed
    return "email", bytes(msg)


def _call(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    return "twilio-voice", urlencode(
        {
            "CallSid": "CA" + uuid.uuid5(uuid.NAMESPACE_URL, pid).hex,
            "CallStatus": "completed",
            "Direction": "inbound",
            "From": c.phone,
            "To": BUSINESS["phone"],
            "Timestamp": format_datetime(step.at),
            "CallDuration": "240",
        }
    ).encode()


def _whatsapp(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": BUSINESS["waba"],
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
                            "contacts": [{"profile": {"name": c.first}, "wa_id": c.phone.lstrip("+")}],
                            "messages": [
                                {
                                    "from": c.phone.lstrip("+"),
                                    "id": f"wamid.{pid}",
                                    "timestamp": str(int(step.at.timestamp())),
                                    "type": "text",
                                    "text": {"body": say["dm"].format(order=c.order)},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return "meta", json.dumps(body).encode()


def _form(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    return "web-form", json.dumps(
        {
            "submission_id": pid,
            "form_id": "ski-insurance",
            "submitted_at": step.at.isoformat(),
            "fields": {
                "email": c.email,
                "phone": c.phone,
                "name": f"{c.first} {c.last}",
                "policy": "ski",
                "newsletter": c.n % 2 == 0,
                "message": text,
            },
            "visitor_id": c.visitor,
        }
    ).encode()


def _chat(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    return "chat", json.dumps(
        {
            "message_id": pid,
            "session_id": f"s-{c.visitor}",
            "visitor_id": c.visitor,
            "sent_at": step.at.isoformat(),
            "sender": "visitor",
            "text": text,
            "login": {"email": c.email},
        }
    ).encode()


def _review(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    return "review", json.dumps(
        {
            "review_id": pid,
            "platform": "trustpilot",
            "rating": 1 + c.n % 5,
            "author_handle": c.handle,
            "text": text,
            "created_at": step.at.isoformat(),
            "marketing_consent": c.n % 3 == 0,
        }
    ).encode()


def _order(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    return "shopify", json.dumps(
        {
            "id": int(uuid.uuid5(uuid.NAMESPACE_URL, pid).int % 10**18),
            "created_at": step.at.isoformat(),
            "email": c.email,
            "order_number": int(c.order),
            "name": f"#{c.order}",
            "currency": "EUR",
            "total_price": "59.90",
            "buyer_accepts_marketing": c.n % 2 == 0,
            "customer": {
                "id": 115310627314723954 + int(c.x_id),
                "first_name": c.first,
                "last_name": c.last,
                "phone": c.phone,
            },
            "line_items": [{"title": "Espresso machine", "quantity": 1}],
        }
    ).encode()


def _agent(step: Step, c: Customer, say: dict, pid: str, text: str) -> tuple[str, bytes]:
    to = {
        "email": {"kind": "email", "value": c.email},
        "voice": {"kind": "phone", "value": c.phone},
        "whatsapp": {"kind": "phone", "value": c.phone},
        "chat": {"kind": "chat_visitor", "value": c.visitor},
    }.get(
        step.channel,
        {"kind": "social", "value": c.handle, "platform": "twitter" if step.channel == "twitter" else "trustpilot"},
    )
    return "agent", json.dumps(
        {
            "message_id": pid,
            "channel": step.channel,
            "sent_at": step.at.isoformat(),
            "agent_id": f"agent-{c.n % 4 + 1}",
            "department": "support",
            "to": to,
            "text": say["agent"],
            "in_reply_to": step.reply_to,
        }
    ).encode()


# The provider-native webhook of each step kind: (connector, body).
RENDERERS: dict[str, Callable[[Step, Customer, dict, str, str], tuple[str, bytes]]] = {
    "post": _post,
    "dm": _dm,
    "email": _email,
    "call": _call,
    "whatsapp": _whatsapp,
    "form": _form,
    "chat": _chat,
    "review": _review,
    "order": _order,
    "agent": _agent,
}


def render(step: Step) -> tuple[str, bytes]:
    """(connector, body) of the provider-native webhook for ``step``."""
    c, say, pid = step.customer, SAY[step.customer.lang], provider_id(step)
    try:
        renderer = RENDERERS[step.kind]
    except KeyError:
        raise ValueError(f"unknown step kind {step.kind!r}") from None
    return renderer(step, c, say, pid, say.get(step.kind, "").format(order=c.order))


def traffic(customers: int, seed: int = 42, start: datetime | None = None) -> Iterator[tuple[str, bytes]]:
    for step in journeys(population(customers, seed), seed, start):
        yield render(step)


# ------------------------------------------------------------------------------------ edges


class Pacer:
    """Sleeps so that the i-th item goes out at ``i / rate`` seconds (rate 0 = as fast as possible)."""

    def __init__(self, rate: float):
        self.rate, self.t0 = rate, time.monotonic()

    def wait(self, i: int) -> None:
        if self.rate > 0:
            delay = self.t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def send_http(base_url: str, secrets: dict[str, str | None], items, rate: float = 0.0, progress=None) -> dict[int, int]:
    """POST every (connector, body) to ``base_url``/webhooks/<connector>, signed; counts per status."""
    import httpx

    from connectors.table import CONNECTORS
    from connectors.signatures import signed_headers

    counts: dict[int, int] = {}
    pacer = Pacer(rate)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i, (connector, body) in enumerate(items):
            pacer.wait(i)
            url = f"{base_url.rstrip('/')}/webhooks/{connector}"
            secret = secrets.get(CONNECTORS[connector].secret) or ""
            r = client.post(url, content=body, headers=signed_headers(connector, body, url, secret))
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
            if progress:
                progress()
    return counts


def send_direct(sink, ctx_factory, items, rate: float = 0.0, progress=None) -> dict[str, int]:
    """Map every (connector, body) in-process with the connectors and produce it (no HTTP, no signature)."""
    from connectors.base import Rejected, WebhookRequest
    from connectors.table import CONNECTORS
    from connectors.signatures import MEDIA_TYPES

    counts = {"produced": 0, "dead_lettered": 0}
    pacer = Pacer(rate)
    futures = []
    for i, (connector, body) in enumerate(items):
        pacer.wait(i)
        now = datetime.now(UTC)
        headers = {"content-type": MEDIA_TYPES.get(connector, "application/json"), "x-shopify-topic": "orders/create"}
        req = WebhookRequest(connector, f"direct:{connector}", headers, body, now)
        for item in CONNECTORS[connector].parse(req, ctx_factory(now)):
            if isinstance(item, Rejected):
                futures.append(sink.send_dead_letter(connector, item, {"component": "generate"}))
                counts["dead_lettered"] += 1
            else:
                futures.append(sink.send(item))
                counts["produced"] += 1
        if progress:
            progress()
    sink.producer.flush(60)
    failed = [f for f in futures if f.failed()]
    if failed:
        from threadline.errors import KafkaUnavailable

        raise KafkaUnavailable(f"{len(failed)} records not acknowledged")
    return counts
