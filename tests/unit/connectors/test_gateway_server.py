"""The gateway as it is served (uvloop + httptools, connectors/server.py) answers as before; the
single-record fast path of Sink.publish; the gateway bench's wrk script and its output parser.

No Kafka here: the producer is a fake that acknowledges every send, the codec the single-object
one. No timing is asserted anywhere."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr

from connectors import bench as gateway_bench
from connectors import server
from connectors.base import Rejected
from connectors.contact import event_id
from connectors.signatures import signed_headers
from connectors.sink import Sink
from fixtures.fake_producer import FakeProducer
from threadline.settings import CodecKind, Settings
from threadline.process import free_port

SECRET = "gateway-server-test-secret"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The gateway app with a fake producer, served by uvicorn with ``server.uvicorn_options``."""
    from schemas.codec import SingleObjectCodec
    from connectors.gateway import create_app

    settings = Settings(
        home=tmp_path_factory.mktemp("gateway-server"),
        codec=CodecKind.SINGLE_OBJECT,
        webhook_secret=SecretStr(SECRET),
        gateway_host="127.0.0.1",
        gateway_port=free_port(),
    )
    producer = FakeProducer()
    app = create_app(
        settings,
        producer_factory=lambda: producer,
        codec_factory=SingleObjectCodec,
        contacts_topic="test.gateway-server.contacts",
        dlq_topic="test.gateway-server.dlq",
    )
    gc_threshold = gc.get_threshold()
    srv = server.make_server(app, settings, timeout_graceful_shutdown=2)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.endpoints.gateway_port}"
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    yield SimpleNamespace(base=base, producer=producer, server=srv, settings=settings)
    srv.should_exit = True
    thread.join(15)
    gc.unfreeze()  # what the served gateway's start-up did to this test process (server.tune_gc)
    gc.set_threshold(*gc_threshold)


def chat_body(mid: str) -> bytes:
    return json.dumps(
        {
            "message_id": mid,
            "session_id": "s-1",
            "visitor_id": "v-42",
            "sent_at": "2026-11-22T08:00:00+00:00",
            "language": "it",
            "text": "Il numero dell'ordine è 100234, potete aiutarmi?",
            "login": {"email": "giulia.rossi@example.it"},
        }
    ).encode()


def test_the_gateway_is_served_by_uvloop_and_httptools():
    options = server.uvicorn_options(Settings())
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert options["loop"] == "uvloop" and issubclass(options["http"], HttpToolsProtocol)
    assert options["proxy_headers"] is False  # X-Forwarded-* only from THREADLINE_TRUSTED_PROXIES
    assert options["timeout_keep_alive"] > 60  # longer than clients' and load balancers' idle timeouts
    import httptools  # noqa: F401  (dependencies: importable, not left to uvicorn's silent fallback)
    import uvloop  # noqa: F401


def test_a_signed_webhook_is_accepted_under_httptools(served):
    url = f"{served.base}/webhooks/chat"
    body = chat_body("m-httptools-1")
    r = httpx.post(url, content=body, headers=signed_headers("chat", body, url, SECRET))
    assert r.status_code == 202, r.text
    accepted = r.json()["accepted"]
    assert [a["event_id"] for a in accepted] == [event_id("chat", "m-httptools-1")]
    topic, key, _, headers = served.producer.sent[-1]
    assert topic == "test.gateway-server.contacts" and key == b"chat_visitor:v-42"
    assert headers["event_id"] == accepted[0]["event_id"]


def test_once_started_the_served_gateways_objects_are_frozen_and_the_young_threshold_raised(served):
    assert served.server.started
    assert gc.get_freeze_count() > 10_000  # FastAPI, pydantic, the schemas: out of the collector's sight
    assert gc.get_threshold()[0] == server.GC_GEN0_THRESHOLD > 700


def test_the_bench_primes_a_gateway_with_one_signed_request_per_language_before_measuring(served):
    url = f"{served.base}/webhooks/chat"
    before = len(served.producer.sent)
    gateway_bench.prime(url, SECRET, "prime-test")
    sent = served.producer.sent[before:]
    assert len(sent) == len(gateway_bench.chat_templates()) == 5
    assert len({headers["event_id"] for _, _, _, headers in sent}) == 5
    with pytest.raises(RuntimeError, match="401"):
        gateway_bench.prime(url, "not-the-secret", "prime-test-2")


def test_keep_alive_requests_on_one_connection_each_get_their_answer(served):
    url = f"{served.base}/webhooks/chat"
    with httpx.Client() as client:
        ids = []
        for i in range(5):
            body = chat_body(f"m-keepalive-{i}")
            r = client.post(url, content=body, headers=signed_headers("chat", body, url, SECRET))
            assert r.status_code == 202, r.text
            ids.append(r.json()["accepted"][0]["event_id"])
    assert ids == [event_id("chat", f"m-keepalive-{i}") for i in range(5)]


def test_a_wrong_signature_unknown_connector_and_bad_json_answer_as_before(served):
    url = f"{served.base}/webhooks/chat"
    body = chat_body("m-bad")
    wrong = signed_headers("chat", body, url, "not-the-secret")
    assert httpx.post(url, content=body, headers=wrong).status_code == 401
    assert (
        httpx.post(
            f"{served.base}/webhooks/nope", content=body, headers={"content-type": "application/json"}
        ).status_code
        == 404
    )
    junk = b"{not json"
    r = httpx.post(url, content=junk, headers=signed_headers("chat", junk, url, SECRET))
    assert r.status_code == 400 and r.json()["error"] == "invalid_body"
    assert httpx.get(f"{served.base}/healthz").json() == {"status": "ok"}


@pytest.mark.skipif(gateway_bench.wrk_path() is None, reason="wrk is not installed (apt-get install wrk)")
def test_the_wrk_script_signs_every_request_so_the_gateway_accepts_all(served):
    """The Lua HMAC-SHA256 (and its self-test) against the gateway's own verification."""
    url = f"{served.base}/webhooks/chat"
    warm = json.dumps({**json.loads(chat_body("m-warm")), "language": None}).encode()  # detection loads once
    assert (
        httpx.post(url, content=warm, headers=signed_headers("chat", warm, url, SECRET), timeout=120).status_code == 202
    )
    before = len(served.producer.sent)
    result = gateway_bench.run_wrk(f"{served.base}/webhooks/chat", SECRET, seconds=1, connections=2, run="unit-wrk")
    assert result.requests > 0
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    sent = served.producer.sent[before:]
    assert len(sent) >= result.requests
    assert len({h["event_id"] for _, _, _, h in sent}) == len(sent)  # every request its own message id


# -- Sink.publish ---------------------------------------------------------------------------------


def _contact(mid: str):
    from connectors.contact import ContactIn

    return ContactIn(
        provider_id=mid,
        connector="chat",
        channel="chat",
        occurred_at="2026-11-22T08:00:00Z",
        identities=[{"kind": "chat_visitor", "value": "v-1"}],
    )


class _Codec:
    def encode(self, topic, subject, record):
        return record["event_id"].encode()


@pytest.mark.parametrize("n_contacts, n_rejected", [(1, 0), (0, 1), (2, 0), (1, 1), (0, 0)])
def test_publish_returns_one_acknowledgment_per_record_in_order(n_contacts, n_rejected):
    producer = FakeProducer()
    sink = Sink(producer, _Codec(), contacts_topic="c", dlq_topic="d")
    contacts = [_contact(f"m-{i}") for i in range(n_contacts)]
    rejected = [Rejected("unknown event", b"raw-%d" % i) for i in range(n_rejected)]
    acks, dlq = asyncio.run(sink.publish("chat", contacts, rejected))
    assert [m.topic for m in acks] == ["c"] * n_contacts
    assert [m.topic for m in dlq] == ["d"] * n_rejected
    assert [p[2] for p in producer.sent[:n_contacts]] == [
        event_id("chat", f"m-{i}").encode() for i in range(n_contacts)
    ]


# -- the bench's reading of wrk's output -----------------------------------------------------------

# Recorded from a run of ``wrk -t1 -c32 -d15s -s connectors/wrk_chat.lua`` against the gateway.
WRK_OUTPUT = """\
Running 15s test @ http://127.0.0.1:41235/webhooks/chat
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    29.12ms   18.41ms 168.20ms   80.02%
    Req/Sec     1.09k   211.37     1.52k    70.67%
  16322 requests in 15.03s, 4.39MB read
Requests/sec:   1086.02
Transfer/sec:    299.35KB
THREADLINE_WRK {"requests": 16322, "duration_us": 15029311, "bytes": 4603004, "p50_us": 25204, "p90_us": 48811, \
"p99_us": 107612, "max_us": 168203, "mean_us": 29121.4, "errors_connect": 0, "errors_read": 0, "errors_write": 0, \
"errors_status": 3, "errors_timeout": 1}
"""


def test_the_bench_reads_wrks_summary_line():
    r = gateway_bench.parse_wrk(WRK_OUTPUT)
    assert r.requests == 16322 and r.seconds == pytest.approx(15.029311)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == pytest.approx((25.204, 48.811, 107.612, 168.203))
    assert r.errors == {"connect": 0, "read": 0, "write": 0, "status": 3, "timeout": 1} and r.failed == 4
    assert r.per_second == pytest.approx(16322 / 15.029311)


def test_cpu_per_request_is_the_gateways_cpu_seconds_over_requests():
    r = gateway_bench.LoadResult(
        requests=2000,
        seconds=2.0,
        p50_ms=1,
        p90_ms=2,
        p99_ms=3,
        max_ms=4,
        errors={},
        gateway_cpu_seconds=0.8,
        loadgen_cpu_seconds=0.1,
    )
    assert r.gateway_cpu_us == pytest.approx(400.0) and r.loadgen_cpu_us == pytest.approx(50.0)


def test_output_without_the_summary_line_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="THREADLINE_WRK"):
        gateway_bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_without_wrk_the_report_says_not_measured_and_why():
    raw = gateway_bench.ProduceResult(events=20000, seconds=0.5, cpu_seconds=0.4)
    from threadline.benchkit import Rate

    section = gateway_bench.gateway_section(None, raw, Rate(20000, 10.0), 250.0)
    text = section.markdown()
    assert "not measured" in text and "apt-get install wrk" in text
