"""Probes and metrics endpoints of every component: ``/metrics``, ``/livez``, ``/readyz``.

* ``/livez``: the process is alive and its loop answers (the FastAPI apps answer from their event
  loop; the worker checks its faust loop, the projectors their threads).
* ``/readyz``: every dependency the component needs answers. Each ``Check`` is a probe with a
  short timeout whose answer is cached for ``ttl`` seconds, so probes cost the dependency almost
  nothing. 200 ``{"status": "ready", ...}`` or 503 with ``"failing": [<dependency>, ...]``.

The gateway and the API serve them on their own FastAPI app (``install``) with a middleware that
counts requests by route template; the worker and the projectors, which serve no HTTP otherwise,
on a small threaded server (``serve``) at THREADLINE_OPS_HOST and their ops port (0: none).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request  # at module level: FastAPI resolves the docs routes' annotations here

from threadline import metrics
from threadline.errors import ConfigError
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.ops")

PROBE_TIMEOUT = 2.0  # seconds a dependency may take to answer a readiness probe
PROBE_TTL = 1.5  # seconds a probe's answer is reused


# -- readiness --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class Check:
    """A named dependency probe. ``probe()`` (a function or a coroutine function) returns or
    raises; a raise is a failure with the exception as detail. The answer is kept ``ttl`` seconds."""

    def __init__(
        self,
        name: str,
        probe: Callable,
        *,
        ttl: float = PROBE_TTL,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name, self.probe, self.ttl, self.timeout, self.clock = name, probe, ttl, timeout, clock
        self.is_async = inspect.iscoroutinefunction(probe)
        self._last: tuple[float, CheckResult] | None = None
        self._lock = threading.Lock()

    def _cached(self) -> CheckResult | None:
        if self._last is not None and self.clock() - self._last[0] < self.ttl:
            return self._last[1]
        return None

    def _store(self, result: CheckResult) -> CheckResult:
        self._last = (self.clock(), result)
        return result

    def _fail(self, exc: BaseException) -> CheckResult:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            detail = f"no answer within {self.timeout:g} s"
        return CheckResult(self.name, False, detail[:300])

    def run(self) -> CheckResult:
        with self._lock:
            cached = self._cached()
            if cached is not None:
                return cached
            try:
                if self.is_async:
                    raise TypeError(f"{self.name}: an async probe runs with arun()")
                self.probe()
                result = CheckResult(self.name, True)
            except Exception as exc:  # any failure of a dependency makes the component not ready
                result = self._fail(exc)
            return self._store(result)

    async def arun(self) -> CheckResult:
        cached = self._cached()
        if cached is not None:
            return cached
        if not self.is_async:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self.run)
        try:
            await asyncio.wait_for(self.probe(), self.timeout)
            result = CheckResult(self.name, True)
        except Exception as exc:  # any failure of a dependency makes the component not ready
            result = self._fail(exc)
        return self._store(result)


def aggregate(results: list[CheckResult]) -> tuple[int, dict]:
    """The /readyz answer: 200 when every check passed, else 503 naming the failing ones."""
    failing = [r.name for r in results if not r.ok]
    body: dict = {
        "status": "not_ready" if failing else "ready",
        "checks": {r.name: ({"ok": True} if r.ok else {"ok": False, "detail": r.detail}) for r in results},
    }
    if failing:
        body["failing"] = failing
    return (503 if failing else 200), body


class Readiness:
    """The checks of one component; ``threadline_ready{component,dependency}`` follows their answers."""

    def __init__(self, component: str, checks: list[Check]):
        self.component, self.checks = component, checks
        self._gauges = {c.name: metrics.READY.labels(component, c.name) for c in checks}
        self._said: dict[str, bool] = {}

    def _record(self, results: list[CheckResult]) -> tuple[int, dict]:
        for r in results:
            self._gauges[r.name].set(1 if r.ok else 0)
            if self._said.get(r.name) != r.ok:  # log changes only, not every probe
                self._said[r.name] = r.ok
                if r.ok:
                    log.info("dependency_ready", component=self.component, dependency=r.name)
                else:
                    log.warning("dependency_not_ready", component=self.component, dependency=r.name, detail=r.detail)
        return aggregate(results)

    def run(self) -> tuple[int, dict]:
        return self._record([c.run() for c in self.checks])

    async def arun(self) -> tuple[int, dict]:
        return self._record(list(await asyncio.gather(*(c.arun() for c in self.checks))))


# -- probes of the shared dependencies -----------------------------------------------------------
class KafkaProbe:
    """Asks a broker to describe the cluster, on an admin client of its own (kept between probes,
    replaced after a failure). Bootstrap and request are bounded by ``timeout``."""

    def __init__(self, settings: Settings, timeout: float = PROBE_TIMEOUT):
        self.settings, self.timeout = settings, timeout
        self._admin = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        from kafka import KafkaAdminClient

        with self._lock:
            try:
                admin = self._admin
                if admin is None:
                    ms = int(self.timeout * 1000)
                    admin = self._admin = KafkaAdminClient(
                        client_id="threadline-readiness",
                        request_timeout_ms=ms,
                        bootstrap_timeout_ms=ms,
                        **self.settings.kafka.client_config(),
                    )
                if not admin.describe_cluster().get("brokers"):
                    raise ConnectionError("the cluster has no brokers")
            except Exception:
                self.close()
                raise

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # a client that already failed may fail to close too
                pass
            self._admin = None


def registry_probe(settings: Settings, timeout: float = PROBE_TIMEOUT) -> Callable[[], None]:
    """The registry answers its (small) global config."""
    import httpx

    def probe() -> None:
        httpx.get(f"{settings.registry.url}/config", timeout=timeout).raise_for_status()

    return probe


def postgres_probe(settings: Settings, timeout: float = PROBE_TIMEOUT) -> Callable[[], None]:
    """``select 1`` on a fresh connection (connect and statement bounded by ``timeout``)."""
    import psycopg

    def probe() -> None:
        with psycopg.connect(
            settings.effective_pg_dsn,
            connect_timeout=max(1, int(timeout)),
            autocommit=True,
            application_name="threadline-readiness",
            options=f"-c statement_timeout={int(timeout * 1000)}",
        ) as conn:
            conn.execute("select 1").fetchone()

    return probe


def kafka_checks(settings: Settings) -> list[Check]:
    """Kafka, and the registry when the codec looks schemas up there."""
    from threadline.settings import CodecKind

    checks = [Check("kafka", KafkaProbe(settings))]
    if settings.registry.codec == CodecKind.CONFLUENT:
        checks.append(Check("registry", registry_probe(settings)))
    return checks


# -- FastAPI apps: middleware and routes --------------------------------------------------------
class HttpMetrics:
    """ASGI middleware: ``threadline_http_requests_total`` and ``threadline_http_request_seconds``
    by method, route template (``/customers/{customer_id}``, never the raw path) and status."""

    def __init__(self, app, name: str):
        self.app, self.name = app, name
        self._requests = metrics.Labelled(metrics.HTTP_REQUESTS, name)
        self._seconds = metrics.Labelled(metrics.HTTP_SECONDS, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
            method = scope["method"]
            self._seconds(method, route).observe(time.perf_counter() - start)
            self._requests(method, route, status).inc()


def install(app, name: str, readiness: Readiness) -> None:
    """``/metrics``, ``/livez`` and ``/readyz`` on a FastAPI app, and the request metrics."""
    from fastapi.responses import JSONResponse, Response

    app.add_middleware(HttpMetrics, name=name)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/livez", include_in_schema=False)
    async def livez():  # answered by the event loop itself: an answer is the proof
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        status, body = await readiness.arun()
        return JSONResponse(body, status_code=status)

    offline_docs(app)


DOCS_ASSETS = "/docs/assets"


def offline_docs(app) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` served with their JavaScript and CSS from this
    process (the fastapi-offline package carries them), never from a CDN: the pages work on a
    machine without internet. Replaces FastAPI's own CDN-linked pages."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    if not app.openapi_url:
        return
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in ("/docs", "/redoc", "/docs/oauth2-redirect")
    ]
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


# -- processes without HTTP: a threaded ops server --------------------------------------------
Liveness = Callable[[], str | None]  # None: alive; otherwise why not


class _Handler(BaseHTTPRequestHandler):
    server: _OpsHTTPServer

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/livez":
            problem = self.server.liveness()
            body = {"status": "alive"} if problem is None else {"status": "dead", "detail": problem}
            self._json(200 if problem is None else 503, body)
        elif path == "/readyz":
            self._json(*self.server.readiness.run())
        else:
            self._json(404, {"error": "not_found", "detail": "/metrics, /livez or /readyz"})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # probes every few seconds are not worth a log line
        pass


class _OpsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, liveness: Liveness, readiness: Readiness):
        self.liveness, self.readiness = liveness, readiness
        super().__init__(address, _Handler)


@dataclass
class OpsServer:
    httpd: _OpsHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(
    host: str,
    port: int,
    *,
    component: str,
    liveness: Liveness,
    readiness: Readiness,
    variable: str = "its THREADLINE_*_OPS_PORT",
) -> OpsServer | None:
    """Serve /metrics, /livez and /readyz on ``host:port`` in a daemon thread; port 0: nothing.
    ``variable`` names the setting of the port, for the error when the port is taken."""
    if not port:
        log.info("ops_server_disabled", component=component)
        return None
    try:
        httpd = _OpsHTTPServer((host, port), liveness, readiness)
    except OSError as exc:
        raise ConfigError(
            f"{component}: cannot serve /metrics on {host}:{port} ({exc.strerror}); set {variable} (0 disables)"
        ) from None
    thread = threading.Thread(target=httpd.serve_forever, name=f"ops-{component}", daemon=True)
    thread.start()
    log.info("ops_server_started", component=component, host=host, port=httpd.server_address[1])
    return OpsServer(httpd, thread)
