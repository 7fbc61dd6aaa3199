"""The contacts a bench run measures: realistic, seeded, nine channels and five languages."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta


_CAST = [  # local part, mail domain, phone prefix, social handle, language
    ("giulia.rossi", "example.it", "+39347", "giulia_r", "it"),
    ("sanne.devries", "example.nl", "+31612", "sanne_dv", "nl"),
    ("emre.kaya", "example.com.tr", "+90532", "emre.k", "tr"),
    ("kasia.nowak", "example.pl", "+48601", "kasia_n", "pl"),
    ("tom.baker", "example.co.uk", "+44770", "tombaker", "en"),
]

_TEXTS = {
    "it": [
        "Il mio ordine {o} è arrivato rotto, il pacco era aperto. Potete aiutarmi?",
        "Ho già mandato la foto per email: quando arriva il rimborso dell'ordine {o}?",
        "Buongiorno, vorrei cambiare l'indirizzo di consegna dell'ordine {o}.",
    ],
    "nl": [
        "Ik heb het formulier al ingevuld voor de skiverzekering, bestelling {o}.",
        "Mijn pakket {o} is nog steeds niet bezorgd, kunt u even kijken?",
        "Kan ik de verzekering ook per maand betalen? Klantnummer {o}.",
    ],
    "tr": [
        "Hızlı kargo, çok memnun kaldım. Sipariş {o} için teşekkürler!",
        "Sipariş {o} eksik geldi, bir ürün kutuda yoktu.",
        "İade sürecim ne durumda? Sipariş numaram {o}.",
    ],
    "pl": [
        "Kiedy dostanę zwrot pieniędzy za zamówienie {o}?",
        "Paczka {o} przyszła uszkodzona, co mam teraz zrobić?",
        "Chciałabym zmienić adres dostawy zamówienia {o}.",
    ],
    "en": [
        "Can I change my delivery address for order {o}? I am moving next week.",
        "Order {o} arrived with a cracked screen, I'd like a replacement please.",
        "I already called twice about order {o}, nobody got back to me.",
    ],
}

_CLOSINGS = {
    "it": [
        "Grazie mille per l'aiuto, aspetto una vostra risposta oggi stesso.",
        "Sono molto delusa, è la seconda volta che succede quest'anno.",
    ],
    "nl": [
        "Alvast bedankt, ik hoor graag vandaag nog van jullie.",
        "Dit is al de tweede keer dat ik hierover contact opneem.",
    ],
    "tr": [
        "Şimdiden teşekkürler, bugün içinde dönüş bekliyorum.",
        "Bu konuda ikinci kez yazıyorum, lütfen yardımcı olun.",
    ],
    "pl": ["Z góry dziękuję, proszę o odpowiedź jeszcze dzisiaj.", "Piszę w tej sprawie już drugi raz w tym tygodniu."],
    "en": [
        "Thanks in advance, I'd appreciate an answer today.",
        "This is the second time I'm contacting you about this.",
    ],
}

_CHANNELS = ["email", "sms", "whatsapp", "chat", "voice", "twitter", "instagram", "web_form", "review"]


def make_contacts(n: int, seed: int = 7, start: datetime | None = None) -> list:
    """``n`` realistic, varied contacts (``connectors.contact.ContactIn``), deterministic per seed.

    Five customer personas times 2,000 numbered variants, nine channels, texts in the five
    languages of the demo, thread hints, facts and consent where a real provider gives them.
    """
    from connectors.contact import ContactIn

    rng = random.Random(seed)
    t0 = start or datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        local, domain, prefix, handle, lang = _CAST[i % len(_CAST)]
        variant = rng.randrange(2000)
        email = f"{local}{variant}@{domain}"
        phone = f"{prefix}{rng.randrange(10**6, 10**7)}"
        social = f"{handle}{variant}"
        order = str(100000 + rng.randrange(900000))
        channel = _CHANNELS[rng.randrange(len(_CHANNELS))]
        text = f"{rng.choice(_TEXTS[lang]).format(o=order)} {rng.choice(_CLOSINGS[lang])}"
        c: dict = {
            "connector": "bench",
            "channel": channel,
            "language": lang,
            "text": text,
            "occurred_at": t0 + timedelta(seconds=i, milliseconds=rng.randrange(1000)),
            "facts": [{"kind": "order_number", "value": order, "source": "text"}],
            "metadata": {"provider_status": "received", "webhook": f"wh-{rng.randrange(10**8):08d}"},
        }
        pid = uuid.UUID(int=rng.getrandbits(128)).hex
        if channel == "email":
            c["provider_id"] = f"<{pid[:20]}@mail.{domain}>"
            c["identities"] = [{"kind": "email", "value": email, "primary": True}]
            c["subject"] = f"Re: order {order}"
            c["thread"] = {"message_id": c["provider_id"], "in_reply_to": f"<{pid[20:]}@mail.{domain}>"}
            if rng.random() < 0.5:
                c["attachments"] = [
                    {
                        "name": f"IMG_{rng.randrange(10**4):04d}.jpg",
                        "content_type": "image/jpeg",
                        "size_bytes": rng.randrange(10**5, 5 * 10**6),
                        "sha256": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                    }
                ]
        elif channel in ("sms", "whatsapp", "voice"):
            c["provider_id"] = f"{'CA' if channel == 'voice' else 'SM'}{pid}"
            c["identities"] = [{"kind": "phone", "value": phone, "primary": True}]
            if channel == "voice":
                c["thread"] = {"call_id": c["provider_id"]}
                c["metadata"] |= {"duration_s": str(rng.randrange(20, 900)), "queue": "support"}
        elif channel in ("twitter", "instagram", "review"):
            platform_ = "twitter" if channel == "twitter" else "instagram"
            c["provider_id"] = str(rng.randrange(10**18, 10**19))
            c["identities"] = [{"kind": "social", "value": social, "platform": platform_, "primary": True}]
            c["thread"] = {"reply_to_id": str(rng.randrange(10**18, 10**19))}
            if channel == "review":
                c["metadata"] |= {"rating": str(rng.randrange(1, 6))}
                c["consent"] = [{"purpose": "marketing", "channel": platform_, "granted": rng.random() < 0.5}]
        elif channel == "chat":
            c["provider_id"] = f"chat-{pid[:12]}-{rng.randrange(1, 40)}"
            c["identities"] = [
                {"kind": "chat_visitor", "value": f"v-{pid[12:20]}", "primary": True},
                {"kind": "email", "value": email},
            ]
            c["thread"] = {"session_id": f"chat-{pid[:12]}"}
        else:  # web_form
            c["provider_id"] = f"form-{pid[:16]}"
            c["identities"] = [{"kind": "email", "value": email, "primary": True}, {"kind": "phone", "value": phone}]
            c["consent"] = [{"purpose": "marketing", "channel": "email", "granted": True, "source": "form.checkbox"}]
        out.append(ContactIn.model_validate(c))
    return out


def build_records(n: int, seed: int = 7) -> tuple[list[dict], list[bytes]]:
    """Avro records (``to_record``) and their contacts.v1 keys (``partition_key``)."""
    from connectors.contact import partition_key, to_record

    contacts = make_contacts(n, seed)
    records, keys = [], []
    for c in contacts:
        records.append(to_record(c, c.occurred_at + timedelta(milliseconds=250)))
        keys.append(partition_key(c))
    return records, keys
