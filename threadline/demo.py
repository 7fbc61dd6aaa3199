"""``threadline demo``: the local stack, the pipeline, and a handful of contacts through it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console
from rich.table import Table

from threadline import stack
from threadline.settings import Settings
from threadline.stack import apps
from threadline.topics import apply


def demo_contacts(now: datetime | None = None) -> list[dict]:
    """The cast of design.md: Giulia (it), Sanne (nl), Emre (tr), Kasia (pl), Tom (en)."""
    t0 = (now or datetime.now(UTC)).replace(microsecond=0) - timedelta(hours=3)

    def at(minutes: int) -> str:
        return (t0 + timedelta(minutes=minutes)).isoformat()

    giulia = [{"kind": "social", "value": "giulia_r", "platform": "twitter", "primary": True}]
    return [
        {"provider_id": "tw-1790001", "connector": "demo", "channel": "twitter", "occurred_at": at(0),
         "identities": giulia, "language": "it",
         "text": "@shop il mio ordine è arrivato rotto!", "thread": {"message_id": "tw-1790001"}},
        {"provider_id": "dm-5521", "connector": "demo", "channel": "twitter", "occurred_at": at(6),
         "identities": giulia, "language": "it", "text": "Numero d'ordine: 100234",
         "facts": [{"kind": "order_number", "value": "100234", "source": "text"}]},
        {"provider_id": "<c1a2@mail.example.it>", "connector": "demo", "channel": "email", "occurred_at": at(15),
         "identities": [{"kind": "email", "value": "giulia.rossi@example.it", "primary": True}],
         "subject": "Ordine 100234 danneggiato", "language": "it", "text": "Vi mando la foto del pacco.",
         "attachments": [{"name": "pacco.jpg", "content_type": "image/jpeg", "size_bytes": 482113}],
         "thread": {"message_id": "<c1a2@mail.example.it>"}},
        {"provider_id": "form-77", "connector": "demo", "channel": "web_form", "occurred_at": at(30),
         "identities": [{"kind": "email", "value": "sanne.devries@example.nl", "primary": True}], "language": "nl",
         "text": "Ik wil een skiverzekering voor februari.",
         "facts": [{"kind": "travel_month", "value": "2027-02", "source": "form.month"}],
         "consent": [{"purpose": "marketing", "channel": "email", "granted": True, "source": "form.checkbox"}]},
        {"provider_id": "rev-9001", "connector": "demo", "channel": "review", "occurred_at": at(45),
         "identities": [{"kind": "social", "value": "emre.k", "platform": "instagram", "primary": True}],
         "language": "tr", "text": "Hızlı kargo, çok memnun kaldım.", "metadata": {"rating": "5"},
         "consent": [{"purpose": "marketing", "channel": "instagram", "granted": False}]},
        {"provider_id": "SM0a1b2c", "connector": "demo", "channel": "sms", "occurred_at": at(60),
         "identities": [{"kind": "phone", "value": "+48601234567", "primary": True}], "language": "pl",
         "text": "Kiedy dostanę zwrot pieniędzy?"},
        {"provider_id": "chat-3-1", "connector": "demo", "channel": "chat", "occurred_at": at(75),
         "identities": [{"kind": "chat_visitor", "value": "v-8c21", "primary": True},
                        {"kind": "email", "value": "tom.baker@example.co.uk"}], "language": "en",
         "text": "Can I change my delivery address?", "thread": {"session_id": "chat-3"}},
    ]


def run_demo(settings: Settings, console: Console) -> None:
    console.rule("Threadline demo")
    stack.up(settings, log=lambda m: console.print(f"[dim]{m}[/]"))
    report = apply(settings)
    console.print(f"topics: {len(report.created)} created, {len(report.in_line)} in line")
    console.print("starting gateway, identity worker, projector and read API ...")
    apps.start(settings)
    gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
    api = f"http://{settings.api_host}:{settings.api_port}"
    ids = []
    with httpx.Client(timeout=30) as http:
        for contact in demo_contacts():
            resp = http.post(f"{gateway}/contacts", json=contact)
            resp.raise_for_status()
            ids.append(resp.json()["event_id"])
            console.print(f"  sent {contact['channel']:<9} → contacts.v1 "
                          f"partition {resp.json()['partition']} offset {resp.json()['offset']}")
        deadline = time.monotonic() + 90
        rows: dict[str, dict] = {}
        while time.monotonic() < deadline and len(rows) < len(ids):
            for event_id in ids:
                if event_id not in rows:
                    r = http.get(f"{api}/contacts/{event_id}")
                    if r.status_code == 200:
                        rows[event_id] = r.json()
            time.sleep(0.3)
    table = Table("occurred at", "channel", "customer", "text", "facts", title="read model: skeleton.contacts")
    for row in sorted(rows.values(), key=lambda r: r["occurred_at"]):
        facts = ", ".join(f"{f['kind']}={f['value']}" for f in row["facts"] or [])
        table.add_row(row["occurred_at"][:16], row["channel"], row["customer_id"][:8], (row["text"] or "")[:45], facts)
    console.print(table)
    console.print(f"{len(rows)} of {len(ids)} contacts visible through {api}")
    if len(rows) < len(ids):
        raise TimeoutError("not every contact reached the read model; see logs in " + str(settings.state_dir / "logs"))
    console.print(f"Try: curl {api}/contacts   ·   threadline status")
    console.print("Stop everything with [bold]make down[/] (or [bold]threadline down[/]).")
