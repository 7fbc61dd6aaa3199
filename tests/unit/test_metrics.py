"""threadline/metrics.py and threadline/ops.py: metric names and labels, lag, readiness from fake
checks, the HTTP middleware's route templates, the threaded ops server, and the probes of the
worker and projector processes."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from projectors.cli import process_probes
from streams.worker import loop_liveness
from threadline import metrics, ops
from threadline.errors import ConfigError
from threadline.process import free_port


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- names and labels ---------------------------------------------------------------------------
def test_every_metric_is_exposed_under_its_documented_name_with_its_labels():
    names = metrics.series_names()
    assert names["threadline_events_consumed_total"] == ("component", "topic")
    assert names["threadline_events_produced_total"] == ("component", "topic")
    assert names["threadline_processing_seconds_bucket"] == ("component", "stage", "le")
    assert names["threadline_processing_seconds_count"] == ("component", "stage")
    assert names["threadline_consumer_lag"] == ("component", "topic", "partition")
    assert names["threadline_dlq_total"] == ("component", "topic")
    assert names["threadline_sla_total"] == ("event", "channel")
    assert names["threadline_http_requests_total"] == ("app", "method", "route", "status")
    assert names["threadline_http_request_seconds_bucket"] == ("app", "method", "route", "le")
    assert names["threadline_gateway_contacts_total"] == ("connector", "outcome")
    assert names["threadline_ready"] == ("component", "dependency")
    assert all(n.startswith("threadline_") for n in names)


def test_a_labelled_child_is_made_once_and_counts_under_its_labels():
    consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, "unit-labelled")
    assert consumed("t.v1") is consumed("t.v1")
    consumed("t.v1").inc(3)
    consumed("u.v1").inc()
    assert value("threadline_events_consumed_total", component="unit-labelled", topic="t.v1") == 3
    assert value("threadline_events_consumed_total", component="unit-labelled", topic="u.v1") == 1


def test_sla_event_types_map_to_the_event_label():
    assert metrics.SLA_EVENTS == {
        "sla_started": "started",
        "sla_hit": "hit",
        "sla_breached": "breached",
        "sla_withdrawn": "withdrawn",
    }


# -- lag ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "end, position, expected", [(100, 40, 60), (40, 40, 0), (40, 41, 0), (None, 5, None), (5, None, None), (0, 0, 0)]
)
def test_lag_is_end_offset_minus_position_never_negative_and_unknown_without_both(end, position, expected):
    assert metrics.lag(end, position) == expected


def test_the_lag_gauge_sets_each_partition_and_drops_partitions_no_longer_assigned():
    gauge = metrics.LagGauge("unit-lag")
    gauge.update({("a", 0): 5, ("a", 1): 0, ("b", 0): None})
    assert value("threadline_consumer_lag", component="unit-lag", topic="a", partition="0") == 5
    assert (
        REGISTRY.get_sample_value("threadline_consumer_lag", {"component": "unit-lag", "topic": "a", "partition": "1"})
        == 0
    )
    assert (
        REGISTRY.get_sample_value("threadline_consumer_lag", {"component": "unit-lag", "topic": "b", "partition": "0"})
        is None
    )
    gauge.update({("a", 1): 7})  # partition a/0 was revoked
    assert (
        REGISTRY.get_sample_value("threadline_consumer_lag", {"component": "unit-lag", "topic": "a", "partition": "0"})
        is None
    )
    assert value("threadline_consumer_lag", component="unit-lag", topic="a", partition="1") == 7
    gauge.clear()
    assert (
        REGISTRY.get_sample_value("threadline_consumer_lag", {"component": "unit-lag", "topic": "a", "partition": "1"})
        is None
    )


def test_lag_from_offsets_leaves_out_a_partition_whose_position_cannot_be_had():
    tp = SimpleNamespace
    ends = {("c", 0): 10, ("c", 1): 10}

    def position(t):
        if t.partition == 1:
            raise RuntimeError("partition is not assigned")
        return 4

    gauge = metrics.LagGauge("unit-lag-from")
    gauge.update_from(
        [tp(topic="c", partition=0), tp(topic="c", partition=1)], lambda t: ends[(t.topic, t.partition)], position
    )
    assert gauge.current == {("c", 0)}
    assert value("threadline_consumer_lag", component="unit-lag-from", topic="c", partition="0") == 6


def test_sample_value_sums_matching_samples_of_an_exposition():
    text = (
        '# TYPE x_total counter\nx_total{app="a",route="/r"} 2.0\nx_total{app="a",route="/s"} 3.0\n'
        'x_total{app="b",route="/r"} 7.0\n'
    )
    assert metrics.sample_value(text, "x_total", app="a") == 5
    assert metrics.sample_value(text, "x_total", route="/r") == 9
    assert metrics.sample_value(text, "missing_total") == 0


# -- readiness ----------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_check_answer_is_cached_for_its_ttl_then_probed_again():
    clock, calls, fail = FakeClock(), [], [False]

    def probe():
        calls.append(clock.t)
        if fail[0]:
            raise ConnectionError("connection refused")

    check = ops.Check("kafka", probe, ttl=1.5, clock=clock)
    assert check.run() == ops.CheckResult("kafka", True)
    fail[0] = True
    clock.t += 1.0
    assert check.run().ok and len(calls) == 1  # still the cached answer
    clock.t += 1.0
    assert check.run() == ops.CheckResult("kafka", False, "connection refused")
    assert len(calls) == 2


def test_readiness_is_200_when_every_check_passes_and_503_naming_each_failing_dependency():
    assert ops.aggregate([ops.CheckResult("kafka", True), ops.CheckResult("postgres", True)]) == (
        200,
        {"status": "ready", "checks": {"kafka": {"ok": True}, "postgres": {"ok": True}}},
    )
    status, body = ops.aggregate(
        [
            ops.CheckResult("kafka", True),
            ops.CheckResult("postgres", False, "refused"),
            ops.CheckResult("registry", False, "timeout"),
        ]
    )
    assert status == 503
    assert body["status"] == "not_ready" and body["failing"] == ["postgres", "registry"]
    assert body["checks"]["postgres"] == {"ok": False, "detail": "refused"}


def test_readiness_sets_the_ready_gauge_per_dependency():
    def down():
        raise OSError("no route to host")

    readiness = ops.Readiness("unit-ready", [ops.Check("kafka", lambda: None), ops.Check("postgres", down)])
    status, body = readiness.run()
    assert status == 503 and body["failing"] == ["postgres"]
    assert value("threadline_ready", component="unit-ready", dependency="kafka") == 1
    assert value("threadline_ready", component="unit-ready", dependency="postgres") == 0


def test_an_async_check_that_does_not_answer_in_time_fails_with_the_timeout():
    async def hangs():
        await asyncio.sleep(10)

    async def answers():
        return None

    readiness = ops.Readiness("unit-async", [ops.Check("postgres", hangs, timeout=0.1), ops.Check("kafka", answers)])
    t0 = time.monotonic()
    status, body = asyncio.run(readiness.arun())
    assert time.monotonic() - t0 < 2
    assert status == 503 and body["failing"] == ["postgres"]
    assert body["checks"]["postgres"]["detail"] == "no answer within 0.1 s"


def test_kafka_probe_fails_within_its_timeout_when_no_broker_answers(tmp_path):
    from threadline.settings import Settings

    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", home=tmp_path)
    check = ops.Check("kafka", ops.KafkaProbe(settings, timeout=1.0))
    t0 = time.monotonic()
    result = check.run()
    assert not result.ok and time.monotonic() - t0 < 10
    assert "bootstrap" in result.detail.lower()


# -- HTTP middleware and FastAPI routes ---------------------------------------------------------
def _app(name: str, checks: list[ops.Check]) -> FastAPI:
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    async def customer(customer_id: str):
        return {"customer_id": customer_id}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("bug")

    ops.install(app, name, ops.Readiness(name, checks))
    return app


def test_requests_are_counted_by_route_template_not_by_raw_path():
    with TestClient(_app("unit-http", []), raise_server_exceptions=False) as client:
        for i in range(3):
            assert client.get(f"/customers/c-{i}").status_code == 200
        assert client.get("/not/a/route/123").status_code == 404
        assert client.get("/boom").status_code == 500
        text = client.get("/metrics").text
    count = lambda **kw: metrics.sample_value(text, "threadline_http_requests_total", app="unit-http", **kw)  # noqa: E731
    assert count(route="/customers/{customer_id}", method="GET", status="200") == 3
    assert count(route=metrics.UNMATCHED_ROUTE, status="404") == 1
    assert count(route="/boom", status="500") == 1
    assert "c-1" not in text
    assert (
        metrics.sample_value(
            text, "threadline_http_request_seconds_count", app="unit-http", route="/customers/{customer_id}"
        )
        == 3
    )


def test_probe_routes_answer_alive_and_ready_or_503_naming_the_dependency():
    def refused():
        raise ConnectionError("refused")

    with TestClient(_app("unit-probes-ok", [ops.Check("kafka", lambda: None)])) as client:
        assert client.get("/livez").json() == {"status": "alive"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    with TestClient(
        _app("unit-probes-down", [ops.Check("kafka", lambda: None), ops.Check("registry", refused)])
    ) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["registry"]
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_gateway_is_not_ready_naming_kafka_and_registry_when_neither_answers(tmp_path):
    from connectors.gateway import create_app
    from threadline.settings import Settings

    settings = Settings(
        home=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        registry_url=f"http://127.0.0.1:{free_port()}/apis/ccompat/v7",
    )
    from threadline.async_producer import DeadlineProducer

    codec = SimpleNamespace(encode=lambda *_: b"")
    app = create_app(
        settings, producer_factory=lambda: DeadlineProducer(settings, deadline=1.0), codec_factory=lambda: codec
    )
    with TestClient(app) as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["kafka", "registry"]


# -- the threaded ops server of the worker and the projectors -------------------------------------
def test_port_zero_serves_nothing():
    assert (
        ops.serve("127.0.0.1", 0, component="unit", liveness=lambda: None, readiness=ops.Readiness("unit", [])) is None
    )


def test_ops_server_answers_metrics_livez_and_readyz_and_a_taken_port_is_a_config_error():
    alive: list[str | None] = [None]
    up = [True]

    def dependency():
        if not up[0]:
            raise ConnectionError("refused")

    port = free_port()
    server = ops.serve(
        "127.0.0.1",
        port,
        component="unit-ops",
        liveness=lambda: alive[0],
        readiness=ops.Readiness("unit-ops", [ops.Check("postgres", dependency, ttl=0)]),
    )
    try:
        base = f"http://127.0.0.1:{server.port}"
        metrics.EVENTS_CONSUMED.labels("unit-ops", "t").inc()
        scraped = httpx.get(f"{base}/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert metrics.sample_value(scraped.text, "threadline_events_consumed_total", component="unit-ops") == 1
        assert httpx.get(f"{base}/livez").json() == {"status": "alive"}
        assert httpx.get(f"{base}/readyz").status_code == 200
        up[0] = False
        alive[0] = "the event loop did not answer within 5 s"
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["postgres"]
        live = httpx.get(f"{base}/livez")
        assert live.status_code == 503 and live.json()["detail"] == alive[0]
        assert httpx.get(f"{base}/other").status_code == 404
        with pytest.raises(ConfigError, match="THREADLINE_"):
            ops.serve(
                "127.0.0.1",
                server.port,
                component="unit-ops",
                liveness=lambda: None,
                readiness=ops.Readiness("unit-ops2", []),
            )
    finally:
        server.close()


def test_worker_liveness_answers_while_its_loop_turns_and_fails_when_the_loop_is_blocked():
    loop = asyncio.new_event_loop()
    live = loop_liveness(loop, limit=0.3)
    assert live() is None  # not started yet: starting is alive
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert live() is None
        loop.call_soon_threadsafe(time.sleep, 1.0)  # something blocks the loop
        time.sleep(0.05)
        assert live() == "the event loop did not answer within 0.3 s"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert live() == "the event loop is closed"


def test_projector_process_probes_follow_its_threads_and_their_loops():
    clock = FakeClock()

    def runner(name):
        return SimpleNamespace(
            instruments=SimpleNamespace(component=f"projector:{name}", started=False, heartbeat=clock.t)
        )

    runners = [runner("support"), runner("sales")]
    threads = [SimpleNamespace(ident=1, is_alive=lambda: True), SimpleNamespace(ident=2, is_alive=lambda: True)]
    liveness, running = process_probes(runners, threads, clock=clock, stall=60)
    with pytest.raises(RuntimeError, match="projector:support, projector:sales"):
        running()
    for r in runners:
        r.instruments.started = True
    running()
    assert liveness() is None
    clock.t += 61
    runners[0].instruments.heartbeat = clock.t
    assert liveness() == "projector:sales: no turn of its loop for 60 s"
    runners[1].instruments.heartbeat = clock.t
    threads[0] = SimpleNamespace(ident=1, is_alive=lambda: False)
    liveness, _ = process_probes(runners, threads, clock=clock, stall=60)
    assert liveness() == "projector:support stopped"
