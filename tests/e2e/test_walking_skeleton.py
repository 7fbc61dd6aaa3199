"""One contact carried end to end on real parts:
HTTP gateway → contacts.v1 → identity worker (faust) → contacts.resolved.v1 → projector →
Postgres → read API. Every component runs as its own process, as in production."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from fixtures.tokens import API_TOKENS, CONTACT_TOKEN, bearer, token_settings
from threadline.catalog import CONTACTS, EVENT_PARTITIONS
from threadline.tools.stack import apps
from threadline.process import free_port


@pytest.fixture(scope="module")
def pipeline(services, catalog_topics, tmp_path_factory):
    settings = services.settings.model_copy(
        update={
            "home": tmp_path_factory.mktemp("e2e-home"),
            "gateway_port": free_port(),
            "api_port": free_port(),
            **token_settings(),
        }
    )
    apps.start(settings)
    try:
        yield settings
    finally:
        stopped = apps.stop(settings)
        assert sorted(stopped) == sorted(apps.APPS), f"an app had died before the end: {stopped}"


@pytest.fixture
def gateway(pipeline):
    with httpx.Client(
        base_url=f"http://{pipeline.endpoints.gateway_host}:{pipeline.endpoints.gateway_port}",
        timeout=30,
        headers=bearer(CONTACT_TOKEN),
    ) as c:
        yield c


@pytest.fixture
def api(pipeline):
    with httpx.Client(
        base_url=f"http://{pipeline.endpoints.api_host}:{pipeline.endpoints.api_port}",
        timeout=30,
        headers=bearer(API_TOKENS["support"]),
    ) as c:
        yield c


def contact(provider_id: str, handle: str, **extra) -> dict:
    body = {
        "provider_id": provider_id,
        "connector": "e2e",
        "channel": "twitter",
        "occurred_at": datetime.now(UTC).isoformat(),
        "language": "it",
        "identities": [{"kind": "social", "value": handle, "platform": "twitter"}],
        "text": "il mio ordine è arrivato rotto",
        # An order number of this contact's own: identity resolution links customers who share one.
        "facts": [{"kind": "order_number", "value": f"9{abs(hash(handle)) % 10**8:08d}"}],
    }
    body.update(extra)
    return body


def wait_visible(api, event_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/contacts/{event_id}")
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 404, r.text
        time.sleep(0.2)
    raise AssertionError(f"{event_id} never reached the read model")


def contacts_end_offset(settings) -> int:
    consumer = KafkaConsumer(**settings.kafka.client_config())
    try:
        tps = [TopicPartition(CONTACTS.name, p) for p in range(EVENT_PARTITIONS)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def test_a_posted_contact_comes_back_from_the_read_endpoint(gateway, api):
    handle = f"giulia_{uuid.uuid4().hex[:8]}"
    resp = gateway.post("/contacts", json=contact(f"tw-{handle}", handle))
    assert resp.status_code == 202, resp.text
    ack = resp.json()
    assert ack["topic"] == "contacts.v1" and ack["offset"] >= 0

    row = wait_visible(api, ack["event_id"])
    assert row["channel"] == "twitter"
    assert row["text"] == "il mio ordine è arrivato rotto"
    assert row["facts"] == [{"kind": "order_number", "value": f"9{abs(hash(handle)) % 10**8:08d}", "source": None}]
    assert row["customer_id"]
    assert row["source_topic"] == "contacts.resolved.v1"

    timeline = api.get(f"/customers/{row['customer_id']}/contacts").json()
    assert [c["event_id"] for c in timeline["items"]] == [ack["event_id"]]


def test_the_same_contact_posted_twice_is_one_row(gateway, api, pipeline):
    handle = f"sanne_{uuid.uuid4().hex[:8]}"
    body = contact(f"form-{handle}", handle, channel="web_form")
    before = contacts_end_offset(pipeline)
    first = gateway.post("/contacts", json=body).json()
    second = gateway.post("/contacts", json=body).json()
    assert first["event_id"] == second["event_id"]
    # The log keeps both deliveries (at-least-once); the read model holds one row.
    assert contacts_end_offset(pipeline) - before == 2
    row = wait_visible(api, first["event_id"])
    time.sleep(1.0)  # give the duplicate time to reach the projector too
    timeline = api.get(f"/customers/{row['customer_id']}/contacts").json()
    assert [c["event_id"] for c in timeline["items"]] == [first["event_id"]]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"provider_id": None}, "provider_id"),
        ({"channel": "carrier_pigeon"}, "channel"),
        ({"occurred_at": "2026-11-22T10:00:00"}, "occurred_at"),
        ({"identities": []}, "identities"),
        ({"identities": [{"kind": "email"}]}, "identities.0.value"),
    ],
)
def test_a_malformed_contact_gets_400_naming_the_field_and_nothing_is_produced(gateway, pipeline, change, field):
    body = contact("bad-1", "nobody")
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    before = contacts_end_offset(pipeline)
    resp = gateway.post("/contacts", json=body)
    assert resp.status_code == 400
    err = resp.json()
    assert err["error"] == "invalid_body"
    assert field in [f["field"] for f in err["fields"]]
    assert contacts_end_offset(pipeline) == before


def test_bad_requests_get_clear_json_errors(gateway, api, pipeline):
    before = contacts_end_offset(pipeline)
    r = gateway.post("/contacts", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = gateway.post(
        "/contacts", content=b"provider_id=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    r = gateway.post(
        "/contacts",
        content=b"{" + b" " * (pipeline.connectors.max_body_bytes + 1) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert contacts_end_offset(pipeline) == before

    r = api.get(f"/contacts/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.get("/contacts/not-a-uuid")
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "event_id"
    r = api.get("/customers/x/contacts", params={"limit": 0})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "limit"


def test_a_bad_record_on_contacts_goes_to_the_streams_dlq_and_does_not_block_the_partition(gateway, api, pipeline):
    from threadline.catalog import STREAMS_DLQ
    from threadline.kafka import make_producer

    handle = f"emre_{uuid.uuid4().hex[:8]}"
    body = contact(f"rev-{handle}", handle, channel="review")
    key = f"social:twitter:{handle}".encode()  # the partition the valid contact will use
    dlq = KafkaConsumer(**pipeline.kafka.client_config())
    tp = TopicPartition(STREAMS_DLQ.name, 0)
    dlq.assign([tp])
    dlq.seek(tp, dlq.end_offsets([tp])[tp])

    producer = make_producer(pipeline)
    meta = producer.send(CONTACTS.name, key=key, value=b"\x00\x7f\xff\xff\xffgarbage").get(timeout=30)
    producer.close()
    ack = gateway.post("/contacts", json=body).json()
    assert ack["partition"] == meta.partition and ack["offset"] > meta.offset
    wait_visible(api, ack["event_id"])  # the record behind the bad one went through

    deadline = time.monotonic() + 30
    found = []
    while not found and time.monotonic() < deadline:
        for m in dlq.poll(timeout_ms=500).get(tp, []):
            h = dict(m.headers)
            if (
                h.get("source_offset") == str(meta.offset).encode()
                and h.get("source_partition") == str(meta.partition).encode()
            ):
                found.append(m)
    dlq.close()
    assert found, "the bad record did not reach streams.dlq.v1"
    assert found[0].value == b"\x00\x7f\xff\xff\xffgarbage"
    assert dict(found[0].headers)["reason"]


def test_the_gateway_and_the_api_describe_themselves_in_openapi(gateway, api):
    assert "/contacts" in gateway.get("/openapi.json").json()["paths"]
    paths = api.get("/openapi.json").json()["paths"]
    assert "/contacts/{event_id}" in paths and "/customers/{customer_id}/contacts" in paths
