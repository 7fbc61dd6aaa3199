"""One customer, one set of numbers: support's card, sales' card and the flag's reasons count
with the definitions of projectors.definitions (support contacts, SLA breaches per window, the
customer's sentiment and trend), on real Kafka and PostgreSQL, through the read API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

import story as st
from fixtures.tokens import API_TOKENS, bearer, token_settings
from projector_events import contact, conversation, sla
from projectors import definitions
from projectors.api import create_app


@pytest.fixture
def case(prefixed, sources, codec, unique):
    now = datetime.now(UTC).replace(microsecond=0)
    c = f"marta-{unique}"
    tweet_at = now - timedelta(days=1)
    twitter = [{"kind": "social", "value": f"marta_{unique}", "platform": "twitter"}]
    phone = [{"kind": "phone", "value": "+393401112233"}]
    contacts = [
        contact(
            c,
            f"{unique}-tweet",
            "twitter",
            tweet_at,
            text="Il mio ordine è arrivato rotto!",
            language="it",
            identities=twitter,
        ),
        contact(
            c,
            f"{unique}-reply",
            "twitter",
            tweet_at + timedelta(minutes=90),
            identities=twitter,
            text="Ci dispiace molto, ce ne occupiamo subito.",
            language="it",
            direction="outbound",
            actor={"role": "agent", "department": "support"},
        ),
        contact(
            c,
            f"{unique}-ring",
            "voice",
            tweet_at + timedelta(hours=3),
            identities=phone,
            thread={"call_id": f"CA{unique}"},
        ),
        contact(
            c,
            f"{unique}-done",
            "voice",
            tweet_at + timedelta(hours=3, minutes=4),
            identities=phone,
            thread={"call_id": f"CA{unique}"},
            event_type="contact.status_changed",
        ),
    ]
    c1, c2 = f"conv-1-{unique}", f"conv-2-{unique}"
    first = sla("first_response", tweet_at, 3600)
    old_at = now - timedelta(days=20)
    convs = [
        conversation(c, c1, "opened", tweet_at, channel="twitter", contact_event_id=contacts[0]["event_id"]),
        conversation(c, c1, "sla_started", tweet_at, channel="twitter", waiting_on="agent", sla=first),
        conversation(c, c1, "message_appended", tweet_at, channel="twitter", contact_event_id=contacts[0]["event_id"]),
        # the first response came late: breached at its due time, then the resolution clock runs
        conversation(c, c1, "sla_breached", first["due_at"], channel="twitter", sla={**first, "elapsed_seconds": 5400}),
        conversation(
            c,
            c1,
            "message_appended",
            contacts[1]["occurred_at"],
            channel="twitter",
            contact_event_id=contacts[1]["event_id"],
            waiting_on="customer",
        ),
        conversation(
            c,
            c1,
            "sla_started",
            contacts[1]["occurred_at"],
            channel="twitter",
            sla=sla("resolution", tweet_at, 7 * 86400),
        ),
        conversation(
            c,
            c1,
            "message_appended",
            contacts[2]["occurred_at"],
            channel="voice",
            contact_event_id=contacts[2]["event_id"],
            waiting_on="agent",
        ),
        conversation(
            c,
            c1,
            "message_appended",
            contacts[3]["occurred_at"],
            channel="voice",
            contact_event_id=contacts[3]["event_id"],
        ),
        # an older conversation: breached twenty days ago, touched yesterday
        conversation(c, c2, "opened", old_at, channel="email"),
        conversation(c, c2, "sla_started", old_at, channel="email", sla=sla("first_response", old_at, 3600)),
        conversation(
            c,
            c2,
            "sla_breached",
            old_at + timedelta(hours=1),
            channel="email",
            sla=sla("first_response", old_at, 3600, elapsed=7200),
        ),
        conversation(
            c, c2, "waiting_changed", now - timedelta(days=1, hours=2), channel="email", waiting_on="customer"
        ),
    ]
    s = st.Story(c, c, c, c1, c2, contacts, convs, [], now)
    st.publish(prefixed, codec, sources, s)
    st.project(prefixed, sources, codec=codec)
    return s


@pytest.fixture
def api(prefixed, case):
    with TestClient(
        create_app(prefixed.model_copy(update=token_settings())), headers=bearer(API_TOKENS["admin"])
    ) as client:
        yield client


def test_the_agents_reply_is_no_support_contact_and_one_call_is_one(api, case):
    r = api.get(f"/sales/customers/{case.giulia}").json()
    assert (r["support_contacts_7d"], r["support_contacts_30d"]) == (2, 2), r


def test_breaches_are_counted_by_when_they_happened_in_the_window(api, case):
    r = api.get(f"/sales/customers/{case.giulia}").json()
    assert (r["breached_slas_7d"], r["breached_slas_30d"]) == (1, 2), r
    assert "1 breached SLA(s) in the last 7 days" in r["talk_to_support_first_reasons"]


def test_the_card_and_the_flag_show_the_same_sentiment_and_trend(api, case):
    sales = api.get(f"/sales/customers/{case.giulia}").json()
    card = api.get(f"/customers/{case.giulia}").json()
    assert sales["sentiment_7d"] == -1.0 and sales["sentiment_prior_23d"] is None  # the agent's 0.0 not mixed in
    assert sales["sentiment_trend"] == "worsening" == sales["sentiment"]["trend"]
    assert card["sentiment"] == sales["sentiment"]
    assert "negative sentiment in the last 7 days (-1.00, worsening)" in sales["talk_to_support_first_reasons"]


def test_the_views_count_as_the_python_definitions_do(prefixed, pg, case):
    schema = f"{prefixed.projections.prefix}sales"
    with pg.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"select event_id::text, occurred_at, channel, direction, actor_role, department, thread,"
            f" sentiment from {schema}.v_contacts where customer_id = %s",
            (case.giulia,),
        ).fetchall()
        now = cur.execute(f"select now from {schema}.clock").fetchone()["now"]
        view = cur.execute(
            f"select support_contacts_7d, support_contacts_30d, sentiment_7d, sentiment_prior_23d,"
            f" sentiment_30d, sentiment_latest from {schema}.customer_360 where customer_id = %s",
            (case.giulia,),
        ).fetchone()
    s = definitions.sentiment_of(rows, now)
    assert view == {
        "support_contacts_7d": definitions.count_support_contacts(rows, now, 7),
        "support_contacts_30d": definitions.count_support_contacts(rows, now, 30),
        "sentiment_7d": s.recent_7d,
        "sentiment_prior_23d": s.prior_23d,
        "sentiment_30d": s.avg_30d,
        "sentiment_latest": s.latest,
    }
