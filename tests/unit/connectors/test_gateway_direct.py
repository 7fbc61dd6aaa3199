"""POST /webhooks/<connector> is answered before FastAPI's routing (connectors.gateway.GatewayApp)
and still behaves as a routed request: the same answers, the same request metrics, an
unexpected exception a JSON 500, the route in the OpenAPI document; every other request is
routed by FastAPI as before.

No Kafka: the producer is a fake that acknowledges every send, the codec the single-object one.
No timing is asserted."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from connectors.contact import event_id
from connectors.gateway import create_app, webhook_connector
from connectors.signatures import signed_headers
from threadline import metrics
from fixtures.fake_producer import FakeProducer
from threadline.settings import CodecKind, Settings

SECRET = "gateway-direct-test-secret"
BASE = "http://testserver"


@pytest.fixture()
def gw(tmp_path):
    from schemas.codec import SingleObjectCodec

    producer = FakeProducer()
    settings = Settings(
        _env_file=None,
        home=tmp_path,
        codec=CodecKind.SINGLE_OBJECT,
        webhook_secret=SecretStr(SECRET),
        max_body_bytes=4096,
    )
    app = create_app(
        settings,
        producer_factory=lambda: producer,
        codec_factory=SingleObjectCodec,
        contacts_topic="test.direct.contacts",
        dlq_topic="test.direct.dlq",
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield SimpleNamespace(app=app, client=client, producer=producer)


def chat_body(mid: str, **extra) -> bytes:
    return json.dumps(
        {
            "message_id": mid,
            "session_id": "s-1",
            "visitor_id": "v-42",
            "sent_at": "2026-11-22T08:00:00+00:00",
            "language": "it",
            "text": "Il numero dell'ordine è 100234, potete aiutarmi?",
            **extra,
        }
    ).encode()


def post(gw, body: bytes, path: str = "/webhooks/chat", secret: str = SECRET, **kw):
    url = f"{BASE}{path}"
    return gw.client.post(
        url, content=body, headers={**signed_headers("chat", body, url, secret), **kw.pop("headers", {})}, **kw
    )


def test_a_webhook_post_is_answered_without_fastapis_router(gw, monkeypatch):
    """The router is not reached: a webhook costs no route matching, dependency solving or
    FastAPI middleware (measured: more than mapping and encoding the contact)."""

    async def no_router(scope, receive, send):
        raise AssertionError(f"routed by FastAPI: {scope['method']} {scope['path']}")

    monkeypatch.setattr(gw.app.router, "handle", no_router, raising=False)
    monkeypatch.setattr(gw.app, "middleware_stack", no_router)
    r = post(gw, chat_body("m-direct-1"))
    assert r.status_code == 202, r.text
    assert r.json() == {
        "accepted": [{"event_id": event_id("chat", "m-direct-1"), "partition": 0, "offset": 0}],
        "dead_lettered": 0,
    }
    assert r.headers["content-type"] == "application/json"


def test_the_language_models_are_loaded_during_start_up_not_in_the_first_request(tmp_path, monkeypatch):
    from connectors import normalize
    from schemas.codec import SingleObjectCodec

    loaded: list[tuple[str, ...]] = []
    monkeypatch.setattr(normalize, "_detector", lambda languages: loaded.append(languages))
    settings = Settings(_env_file=None, home=tmp_path, codec=CodecKind.SINGLE_OBJECT, languages="it,nl")
    app = create_app(settings, producer_factory=FakeProducer, codec_factory=SingleObjectCodec)
    assert loaded == []
    with TestClient(app):
        assert loaded == [("it", "nl")]


@pytest.mark.parametrize(
    "content",
    [
        {
            "accepted": [{"event_id": event_id("chat", "m-1"), "partition": 5, "offset": 1234567890123}],
            "dead_lettered": 0,
        },
        {"accepted": [], "dead_lettered": 3},
        {
            "accepted": [{"event_id": event_id("meta", str(i)), "partition": i, "offset": 0} for i in range(50)],
            "dead_lettered": 1,
        },
    ],
)
def test_a_webhooks_202_is_byte_for_byte_what_jsonresponse_made(content):
    from fastapi.responses import JSONResponse

    from connectors.intake import Accepted

    mine, theirs = Accepted(content), JSONResponse(content, status_code=202)
    assert (mine.status_code, mine.raw_headers, mine.body) == (theirs.status_code, theirs.raw_headers, theirs.body)


def test_everything_but_webhook_posts_is_still_routed_by_fastapi(gw):
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    r = gw.client.get("/webhooks/chat")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = gw.client.put("/webhooks/chat", content=b"{}")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert gw.client.post("/webhooks/", content=b"{}").status_code == 404
    assert gw.client.post("/webhooks/chat/extra", content=b"{}").status_code == 404
    doc = gw.client.get("/openapi.json").json()
    assert "post" in doc["paths"]["/webhooks/{connector}"]
    assert "202" in doc["paths"]["/webhooks/{connector}"]["post"]["responses"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/webhooks/chat", "chat"),
        ("/webhooks/twilio-voice", "twilio-voice"),
        ("/webhooks/", None),
        ("/webhooks/chat/", None),
        ("/webhooks/a/b", None),
        ("/webhook/chat", None),
        ("/contacts", None),
    ],
)
def test_webhook_connector_matches_what_the_route_template_matches(path, expected):
    assert webhook_connector(path) == expected


def test_errors_answer_as_json_with_their_statuses(gw):
    body = chat_body("m-direct-err")
    r = post(gw, body, secret="wrong")
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
    r = post(gw, body, path="/webhooks/nope")
    assert (r.status_code, r.json()["error"]) == (404, "unknown_connector")
    r = post(gw, b"x" * 5000)
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    r = post(gw, body, headers={"content-type": "text/plain"})
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    r = post(gw, json.dumps({"message_id": "m"}).encode())
    assert r.status_code == 400 and r.json()["error"] == "invalid_body" and r.json()["fields"]


def test_kafka_not_acknowledging_answers_503_with_retry_after(gw):
    from threadline.errors import KafkaUnavailable

    gw.producer.fail = KafkaUnavailable("no broker")
    r = post(gw, chat_body("m-direct-503"))
    assert r.status_code == 503 and r.json()["error"] == "not_stored" and "retry-after" in r.headers


def test_an_unexpected_exception_is_a_json_500_and_logged_by_type_only(gw, capsys):
    gw.producer.fail = RuntimeError("a message quoting giulia.rossi@example.it")
    r = post(gw, chat_body("m-direct-500"))
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    logged = capsys.readouterr()
    assert "unhandled_error" in logged.err + logged.out and "giulia.rossi" not in logged.err + logged.out


def test_request_metrics_carry_the_route_template_as_before(gw):
    def count(status: str) -> float:
        return (
            metrics.sample_value(
                metrics.exposition().decode(),
                "threadline_http_requests_total",
                app="gateway",
                method="POST",
                route="/webhooks/{connector}",
                status=status,
            )
            or 0.0
        )

    before = count("202"), count("401")
    assert post(gw, chat_body("m-direct-metrics")).status_code == 202
    assert post(gw, chat_body("m-direct-metrics"), secret="wrong").status_code == 401
    assert (count("202"), count("401")) == (before[0] + 1, before[1] + 1)


def test_the_query_string_and_repeated_forwarded_headers_reach_the_mapping(gw, monkeypatch):
    from connectors import intake

    seen = {}
    real = intake.handle

    def spy(req, *a, **kw):
        seen["req"] = req
        return real(req, *a, **kw)

    monkeypatch.setattr(intake, "handle", spy)
    body = chat_body("m-direct-q")
    url = f"{BASE}/webhooks/chat?tenant=a&x=1&x=2"
    r = gw.client.post(url, content=body, headers={**signed_headers("chat", body, url, SECRET), "X-Custom": "v"})
    assert r.status_code == 202, r.text
    req = seen["req"]
    assert req.query == {"tenant": "a", "x": "2"} and req.url == url
    assert req.headers["x-custom"] == "v" and req.headers["content-type"] == "application/json"


def test_a_client_that_goes_away_mid_body_gets_no_answer_and_nothing_is_produced(gw):
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/chat",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "http_version": "1.1",
    }
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    asyncio.run(gw.app(scope, receive, send))
    assert gw.producer.sent == []
    assert all(m["type"] != "http.response.start" or m["status"] == 500 for m in sent)
