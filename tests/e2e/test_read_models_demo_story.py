"""The demo story read back through the read API as each audience sees it.

The projector and the API run as their own processes, as in production. The conversation and
identity events are produced here as the streams (issue 4) will produce them, contract-valid,
onto this test's own topics; the connected version (gateway → streams → projectors) waits for
the streams work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "projectors"))

import story as st  # noqa: E402
from projectors.engine.runner import Sources  # noqa: E402
from schemas.codec import make_codec  # noqa: E402
from fixtures.tokens import API_TOKENS, bearer, token_env  # noqa: E402
from threadline.process import free_port  # noqa: E402
from fixtures.projections import drop_projections


@pytest.fixture(scope="module")
def demo(services, catalog_topics, tmp_path_factory):
    from threadline.topics import admin_client

    u = os.urandom(5).hex()
    settings = services.settings.model_copy(update={"projection_prefix": f"e{u}_", "api_port": free_port()})
    sources = Sources(*(f"test.e2e.{u}.{n}" for n in ("contacts", "conversations", "identities")))
    admin = admin_client(settings)
    admin.create_topics({t: {"num_partitions": 3, "replication_factor": 1} for t in sources.topics()})
    story = st.build(u)
    st.publish(settings, make_codec(settings), sources, story)
    env = {
        **os.environ,
        **services.env(),
        "THREADLINE_PROJECTION_PREFIX": settings.projections.prefix,
        "THREADLINE_API_PORT": str(settings.endpoints.api_port),
        **token_env(),
    }
    logs = tmp_path_factory.mktemp("demo-logs")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "threadline.tools.cli",
                "project",
                "--no-contacts",
                "--contacts-topic",
                sources.contacts,
                "--conversations-topic",
                sources.conversations,
                "--identities-topic",
                sources.identities,
            ],
            env=env,
            stdout=(logs / "project.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "threadline.tools.cli", "serve", "api"],
            env=env,
            stdout=(logs / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.endpoints.api_port}", timeout=30, headers=bearer(API_TOKENS["admin"])
    )
    try:
        deadline = time.monotonic() + 90
        while True:  # ready when every projector reports no lag through the API
            assert all(p.poll() is None for p in procs), "a process died; see " + str(logs)
            assert time.monotonic() < deadline, "the projections did not catch up"
            try:
                lags = {x["projector"]: x for x in client.get("/projections").json()["items"]}
            except httpx.TransportError:
                lags = {}
            mine = [lags.get(f"{settings.projections.prefix}{p}") for p in ("support", "sales", "marketing")]
            if all(m is not None and m["events"] == 0 for m in mine):
                break
            time.sleep(0.2)
        yield story, client
    finally:
        client.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        admin.delete_topics(sources.topics())
        admin.close()
        with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as conn:
            drop_projections(conn, settings.projections.prefix)


def test_the_phone_agent_sees_giulias_tweet_dm_email_and_order_number(demo):
    story, api = demo
    r = api.get("/customers/by-identity", params={"kind": "phone", "value": "+393471234567"})
    assert r.status_code == 200
    cid = r.json()["customer_id"]
    assert cid == story.giulia and r.json()["last_order"] == "4711"
    timeline = api.get(f"/customers/{cid}/timeline").json()["items"]
    thread = [(i["channel"], i["text"]) for i in timeline if i["conversation_id"] == story.conv_giulia]
    assert thread == [
        ("twitter", "Il mio ordine è arrivato rotto!"),
        ("twitter", "Numero ordine 4711"),
        ("email", "Ecco la foto, sono molto delusa"),
        ("voice", "Chiamo per l'ordine rotto"),
    ]
    conv = api.get(f"/conversations/{story.conv_giulia}").json()
    assert conv["opened_at"] == timeline[2]["occurred_at"]  # the SLA clock started at the tweet


def test_the_sales_rep_sees_the_support_contacts_negative_sentiment_and_the_flag(demo):
    story, api = demo
    r = api.get(f"/sales/customers/{story.giulia}").json()
    assert r["support_contacts_7d"] == 4 and r["sentiment_7d"] < 0
    assert r["talk_to_support_first"] is True
    assert "4 support contacts in the last 7 days" in r["talk_to_support_first_reasons"]


def test_marketing_sees_emres_consent_and_no_review_of_his_since_he_withdrew(demo):
    story, api = demo
    # his review withdrew marketing consent (the latest signal): marketing's reviews leave it out
    assert api.get("/marketing/reviews", params={"customer_id": story.emre}).json()["items"] == []
    consent = {
        (c["channel"], c["purpose"]): c["granted"]
        for c in api.get(f"/marketing/customers/{story.emre}/consent").json()["items"]
    }
    assert consent == {("instagram", "marketing"): False, ("email", "newsletter"): True}
