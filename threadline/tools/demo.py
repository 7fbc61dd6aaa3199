"""``threadline demo``: the demo story of design.md through the whole system.

The local stack comes up, the topic catalog is applied, and the four components start as their
own processes (gateway, stream worker, projectors, read API). The cast then reaches the business
the way real customers do, as provider-native, signed webhooks: Giulia orders online, tweets
that the order arrived broken, DMs the order number, emails a photo and calls from her phone;
an agent answers the tweet. Sanne fills a web form for ski insurance, then chats. Emre reviews
the shop. Kasia's WhatsApp message waits unanswered. What support, sales and marketing see is
then read back through the read API and printed.

``threadline demo --external`` tells the same story to components that already run elsewhere
(deploy/compose): it starts and stops nothing, applies no topics, and sends to the gateway and
read API the settings name (THREADLINE_GATEWAY_HOST/PORT, THREADLINE_API_HOST/PORT), signed
with the configured secrets. Each audience reads with its own token of THREADLINE_API_TOKENS
(support, sales, marketing; an admin token stands in for any): the local demo makes them in the
state folder (``threadline.tools.stack.apps.with_local_tokens``). The local demo runs with privacy
on: unless configured, the privacy keys are random ones in the state folder too
(``secrets/privacy_master_key``, ``secrets/privacy_pseudonym_key``; docs/privacy.md).
"""

from __future__ import annotations

import base64
import os
import secrets as pysecrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console
from rich.table import Table

from threadline.errors import ConfigError
from threadline.settings import Settings
from threadline.tools import stack
from threadline.tools.stack import apps
from threadline.topics import apply

# Settings field of each signing secret the demo's gateway needs.
LIVE = ("support", "sales", "marketing", "skeleton.contacts")  # the projectors `threadline project` runs
SECRET_FIELDS = (
    "twilio_auth_token",
    "meta_app_secret",
    "meta_verify_token",
    "x_consumer_secret",
    "shopify_webhook_secret",
    "webhook_secret",
)


# The demo runs with privacy on (docs/privacy.md): the keys of crypto-shredding, 32 random bytes
# each as base64, unless configured.
PRIVACY_FIELDS = ("privacy_master_key", "privacy_pseudonym_key")


def with_demo_secrets(settings: Settings) -> Settings:
    """Signing secrets for the local gateway and the privacy keys of every component: the
    configured ones, else random ones kept in the state folder (files only the demo and the
    components read; values never printed)."""
    folder = settings.state_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    updates = {}
    given = settings.flat()  # by the variables' names: the connectors' secrets and the privacy keys
    for name in (*SECRET_FIELDS, *PRIVACY_FIELDS):
        if given[name] is not None or given[f"{name}_file"] is not None:
            continue
        path = folder / name
        if not path.exists():
            made = base64.b64encode(os.urandom(32)).decode() if name in PRIVACY_FIELDS else pysecrets.token_hex(24)
            path.write_text(made + "\n")
            path.chmod(0o600)
        updates[f"{name}_file"] = path
    return apps.with_local_tokens(settings.model_copy(update=updates))


def reader(api: str, settings: Settings, audience: str) -> httpx.Client:
    """An HTTP client of the read API holding ``audience``'s bearer token."""
    return httpx.Client(
        base_url=api, timeout=30, headers={"authorization": f"Bearer {apps.token(settings, 'api_tokens', audience)}"}
    )


def story(now: datetime | None = None, seed: int = 2026, tag: str = "") -> tuple[dict, list]:
    """The cast and their steps, in event time (the story happened over the last two days).
    Another ``seed`` and ``tag`` give the same cast other phone numbers, order numbers, emails
    and handles (tests run the story beside earlier runs)."""
    from connectors.generate import Step, population

    now = (now or datetime.now(UTC)).replace(microsecond=0)
    cast = population(5, seed=seed)
    if tag:
        cast = [replace(c, email=c.email.replace("@", f".{tag}@"), handle=f"{c.handle}_{tag}") for c in cast]
    giulia, kasia, sanne, emre, _tom = cast
    tweet_at = now - timedelta(hours=26)
    steps = [
        Step(now - timedelta(days=2, hours=3), giulia, "order", "store"),
        Step(tweet_at, giulia, "post", "twitter"),
        Step(tweet_at + timedelta(minutes=6), giulia, "dm", "twitter"),
        Step(tweet_at + timedelta(minutes=15), giulia, "email", "email"),
        Step(tweet_at + timedelta(minutes=25), giulia, "agent", "twitter"),
        Step(tweet_at + timedelta(hours=2), giulia, "call", "voice"),
        Step(now - timedelta(hours=3), sanne, "form", "web_form"),
        Step(now - timedelta(hours=2, minutes=50), sanne, "chat", "chat"),
        Step(now - timedelta(hours=1), emre, "review", "review"),
        Step(now - timedelta(minutes=40), kasia, "whatsapp", "whatsapp"),
    ]
    from connectors.generate import provider_id

    steps[4] = replace(steps[4], reply_to=provider_id(steps[1]))
    return {"giulia": giulia, "sanne": sanne, "emre": emre, "kasia": kasia}, steps


def run_demo(settings: Settings, console: Console, external: bool = False) -> None:
    from connectors.generate import render
    from threadline.secrets import secret

    console.rule("Threadline demo")
    gateway = f"http://{settings.endpoints.gateway_host}:{settings.endpoints.gateway_port}"
    api = f"http://{settings.endpoints.api_host}:{settings.endpoints.api_port}"
    if external:
        console.print(f"telling the story to the running gateway {gateway} and read API {api}")
    else:
        settings = with_demo_secrets(settings)
        stack.up(settings, log=lambda m: console.print(f"[dim]{m}[/]"))
        report = apply(settings)
        console.print(f"topics: {len(report.created)} created, {len(report.in_line)} in line")
        console.print("starting gateway, stream worker, projectors and read API ...")
        apps.start(settings)

    # Each run tells the story with a fresh cast (same people, other numbers and addresses), so
    # it never merges with an earlier run's contacts or with test traffic in the same stack.
    run = datetime.now(UTC)
    cast, steps = story(seed=int(run.timestamp()), tag=f"{run:%H%M%S}")
    keys = {name: secret(settings.connectors, name) for name in SECRET_FIELDS}
    webhooks = [(step, render(step)) for step in steps]
    if external:
        _require_secrets(keys, {connector for _, (connector, _body) in webhooks})
        if settings.auth.api_tokens is None and settings.auth.api_tokens_file is None:
            raise ConfigError(
                "demo --external reads with the read API's tokens; configure THREADLINE_API_TOKENS "
                "(or _FILE) with tokens for support, sales and marketing (or one admin token)"
            )
    support, sales, marketing = (reader(api, settings, a) for a in ("support", "sales", "marketing"))
    with support, sales, marketing, httpx.Client(timeout=30) as http:
        for step, webhook in webhooks:
            event_ids = _post(http, gateway, keys, *webhook)
            # The story spans two days; each contact is let through the pipeline before the next
            # one arrives, as the hours between them would in life.
            _wait_visible(support, api, event_ids)
            console.print(
                f"  {step.at:%a %H:%M}  {step.customer.first:<7} {step.kind:<9} → accepted, resolved and projected"
            )

        giulia = _wait_for(support, "phone", cast["giulia"].phone, contacts=5, what="Giulia's five contacts")
        sanne = _wait_for(support, "email", cast["sanne"].email, contacts=2, what="Sanne's form and chat")
        _wait_for(support, "social", cast["emre"].handle, contacts=1, what="Emre's review")
        _support(console, support, giulia)
        _sales(console, sales, giulia)
        _sanne(console, support, sanne)
        _marketing(console, support, marketing, cast["emre"])
        _inbox(console, support)
    if external:
        console.print(f"\nRead API: {api}/docs · gateway: {gateway}/docs")
        return
    console.print(f"\nRead API: {api}/docs · gateway: {gateway}/docs · [bold]threadline status[/] for lag")
    console.print("Stop everything with [bold]make down[/] (or [bold]threadline down[/]).")


def _require_secrets(keys: dict, connectors: set[str]) -> None:
    """The gateway of another deployment only accepts webhooks signed with its own secrets, so
    they must be configured here too (random ones, as the local demo makes, would be refused)."""
    from connectors.table import CONNECTORS

    missing = sorted(
        {CONNECTORS[c].secret for c in connectors if CONNECTORS[c].secret} - {n for n, v in keys.items() if v}
    )
    if missing:
        raise ConfigError(
            "demo --external signs webhooks with the gateway's secrets; configure "
            + ", ".join(f"THREADLINE_{n.upper()} (or _FILE)" for n in missing)
        )


def _post(http: httpx.Client, gateway: str, keys: dict, connector: str, body: bytes) -> list[str]:
    from connectors.table import CONNECTORS
    from connectors.signatures import signed_headers

    url = f"{gateway}/webhooks/{connector}"
    secret = keys.get(CONNECTORS[connector].secret) or ""
    r = http.post(url, content=body, headers=signed_headers(connector, body, url, secret))
    if r.status_code != 202:
        raise RuntimeError(f"the gateway answered {r.status_code} to a {connector} webhook: {r.text[:300]}")
    return [a["event_id"] for a in r.json()["accepted"]]


def _wait_visible(http: httpx.Client, api: str, event_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for event_id in event_ids:
        while http.get(f"{api}/contacts/{event_id}").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"contact {event_id} did not reach the read models within {timeout:.0f} s; "
                    "see the logs under .threadline/logs"
                )
            time.sleep(0.2)
    while any(p["events"] for p in http.get(f"{api}/projections").json()["items"] if p["projector"] in LIVE):
        if time.monotonic() > deadline:
            raise TimeoutError("the projectors did not catch up; see the logs under .threadline/logs")
        time.sleep(0.2)


def _wait_for(http: httpx.Client, kind: str, value: str, *, contacts: int, what: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    card: dict = {}
    while time.monotonic() < deadline:
        r = http.get("/customers/by-identity", params={"kind": kind, "value": value})
        if r.status_code == 200:
            card = r.json()
            if card.get("contacts", 0) >= contacts:
                return card
        time.sleep(0.5)
    raise TimeoutError(
        f"{what} did not reach the read models within {timeout:.0f} s "
        f"(saw {card.get('contacts', 0)}); see the logs under .threadline/logs"
    )


def _support(console: Console, http: httpx.Client, card: dict) -> None:
    cid = card["customer_id"]
    console.rule("Support · the phone agent takes Giulia's call")
    ids = ", ".join(f"{i['kind']}:{i['value']}" for i in card["identities"])
    facts = ", ".join(f"{f['kind']}={f['value']}" for f in card["facts"])
    console.print(f"customer {cid[:8]} · language {card['language']} · last order {card['last_order']}")
    console.print(f"identities: {ids}")
    console.print(f"known facts (never ask again): {facts}")
    table = Table("when", "channel", "", "direction", "text")
    for item in http.get(f"/customers/{cid}/timeline").json()["items"]:
        table.add_row(
            item["occurred_at"][5:16].replace("T", " "),
            item["channel"],
            "↪ switch" if item.get("channel_switch") else "",
            item.get("direction") or "",
            (item.get("text") or "")[:60],
        )
    console.print(table)
    for conv in card["open_conversations"] + card["prior_conversations"]:
        console.print(
            f"conversation {conv['conversation_id'][:8]}: {conv['state']}, channels "
            f"{conv.get('channels')}, opened {str(conv.get('opened_at'))[:16]}, "
            f"first response SLA started {str(conv.get('first_sla_started_at') or conv.get('opened_at'))[:16]}"
        )


def _sales(console: Console, http: httpx.Client, card: dict) -> None:
    ctx = http.get(f"/sales/customers/{card['customer_id']}").json()
    console.rule("Sales · the rep opens Giulia's account before the renewal call")
    console.print(
        f"support contacts: {ctx['support_contacts_7d']} in 7 days, {ctx['support_contacts_30d']} in 30 days · "
        f"open conversations {ctx['open_conversations']} · breached SLAs (7d) {ctx['breached_slas_7d']}"
    )
    console.print(f"last purchase {str(ctx.get('last_purchase_at'))[:16]} · sentiment trend {ctx['sentiment_trend']}")
    flag = "[bold red]YES[/]" if ctx["talk_to_support_first"] else "no"
    console.print(f"talk to support first: {flag} ({'; '.join(ctx['talk_to_support_first_reasons'])})")


def _sanne(console: Console, http: httpx.Client, card: dict) -> None:
    console.rule('Support · Sanne chats "I already filled in that form"')
    facts = ", ".join(f"{f['kind']}={f['value']}" for f in card["facts"])
    convs = card["open_conversations"] + card["prior_conversations"]
    console.print(f"{len(convs)} conversation(s); channels {[c.get('channels') for c in convs]}")
    console.print(f"the chat agent sees the form's facts: {facts}")


def _marketing(console: Console, support: httpx.Client, http: httpx.Client, emre) -> None:
    console.rule("Marketing · Emre's review and consent")
    card = support.get("/customers/by-identity", params={"kind": "social", "value": emre.handle}).json()
    for review in http.get("/marketing/reviews", params={"customer_id": card["customer_id"]}).json()["items"]:
        console.print(
            f"review {review.get('rating')}★ on {review.get('platform')} · sentiment "
            f'{review.get("sentiment")} · "{(review.get("text") or "")[:60]}"'
        )
    consent = http.get(f"/marketing/customers/{card['customer_id']}/consent").json()["items"]
    for c in consent:
        console.print(f"consent {c['purpose']} via {c['channel']}: {'granted' if c['granted'] else 'refused'}")
    if not consent:
        console.print("no consent signal given")


def _inbox(console: Console, http: httpx.Client) -> None:
    console.rule("Support inbox · most urgent first")
    table = Table("customer", "channel", "waiting on", "SLA", "due")
    for item in http.get("/support/inbox", params={"limit": 10}).json()["items"]:
        table.add_row(
            item["customer_id"][:8],
            item.get("channel") or "",
            item.get("waiting_on") or "",
            item.get("sla_state") or "",
            str(item.get("sla_due_at") or "")[:16],
        )
    console.print(table)
