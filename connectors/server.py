"""How the gateway is served: one uvicorn worker as every Threadline HTTP service is served
(threadline/serving.py: uvloop with the httptools parser, each response written to the socket
once, the garbage collector tuned once the app has started).

``threadline serve gateway`` and the gateway benchmark both start it through ``run``, so the bench
measures the server that is deployed.
"""

from __future__ import annotations

import sys
from typing import Any

from threadline.serving import (  # noqa: F401 (the gateway's names for them)
    GC_GEN0_THRESHOLD,
    HTTP,
    KEEP_ALIVE_SECONDS,
    LOOP,
    OneWritePerTurn,
    tune_gc,
)


def _protocol_class():
    from threadline.serving import OneWriteHttpToolsProtocol

    return OneWriteHttpToolsProtocol


def uvicorn_options(settings, **overrides: Any) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the gateway.

    proxy_headers off: the gateway reads X-Forwarded-* itself, from THREADLINE_TRUSTED_PROXIES
    only. No access log (the gateway logs each accepted contact itself)."""
    from connectors.gateway import shutdown_limit

    options: dict[str, Any] = dict(
        host=settings.endpoints.gateway_host,
        port=settings.endpoints.gateway_port,
        loop=LOOP,
        http=_protocol_class(),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(shutdown_limit(settings)),
    )
    options.update(overrides)
    return options


def make_server(app, settings, **overrides: Any):
    """A uvicorn server for ``app`` with the gateway's options, ``tune_gc`` run once its start-up
    (the app's lifespan included) is complete."""
    import uvicorn

    class GatewayServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                tune_gc()

    return GatewayServer(uvicorn.Config(app, **uvicorn_options(settings, **overrides)))


def run(app, settings, **overrides: Any) -> None:
    """Serve until stopped, as ``uvicorn.run`` does (exit status 3 when the start-up failed)."""
    from uvicorn.config import STARTUP_FAILURE

    server = make_server(app, settings, **overrides)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
