"""`threadline status` asks each component's /readyz and says which dependency fails."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from threadline.settings import Settings
from threadline.tools.stack import _probe, apps


class _Readyz(BaseHTTPRequestHandler):
    answer: tuple[int, dict] = (200, {"status": "ready"})

    def do_GET(self):  # noqa: N802 (http.server's name)
        status, body = self.server.answer if self.path == "/readyz" else (404, {})
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def readyz_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    server.answer = (200, {"status": "ready"})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_ready_component_answers_yes(readyz_server):
    url = f"http://127.0.0.1:{readyz_server.server_port}"
    assert _probe(lambda: apps.readiness(url)) == (True, "")


def test_a_component_that_is_not_ready_names_the_failing_dependency(readyz_server):
    readyz_server.answer = (503, {"status": "not_ready", "failing": ["postgres", "kafka"]})
    url = f"http://127.0.0.1:{readyz_server.server_port}"
    assert _probe(lambda: apps.readiness(url)) == (False, "not ready: postgres, kafka")


def test_a_component_that_does_not_answer_is_a_no_with_the_reason():
    from threadline.process import free_port

    ok, why = _probe(lambda: apps.readiness(f"http://127.0.0.1:{free_port()}"))
    assert ok is False and why.startswith("ConnectError")


def test_each_component_is_asked_where_it_serves_its_probes():
    s = Settings(gateway_port=1, api_port=2, worker_ops_port=3, projector_ops_port=0, ops_host="0.0.0.0")
    assert apps.url(s, "gateway") == "http://127.0.0.1:1"
    assert apps.url(s, "api") == "http://127.0.0.1:2"
    assert apps.url(s, "worker") == "http://127.0.0.1:3"  # 0.0.0.0 is asked on loopback
    assert apps.url(s, "projector") is None  # port 0: serves no probes, status falls back to the process


class _FakeProcess:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def running(self):
        return False

    def start(self, argv, env=None):
        self.log.append(("start", self.name))


def test_a_start_whose_gateway_never_answers_stops_every_component_it_started(monkeypatch, tmp_path):
    """A half-started set of components must not outlive the failure: a worker left running joins
    the stream group and takes partitions from the next worker (seen in a cold run)."""
    log: list = []
    monkeypatch.setattr(apps, "managed", lambda settings, name: _FakeProcess(name, log))

    def never(*args, **kwargs):
        raise TimeoutError("gateway not ready after 60s")

    monkeypatch.setattr(apps, "wait_until", never)
    monkeypatch.setattr(apps, "stop", lambda settings, names=tuple(apps.APPS): log.append(("stop", tuple(names))))
    with pytest.raises(TimeoutError):
        apps.start(Settings(home=tmp_path))
    started = tuple(name for kind, name in log if kind == "start")
    assert started == tuple(apps.APPS)
    assert log[-1] == ("stop", started)
