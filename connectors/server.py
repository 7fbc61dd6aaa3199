"""How the gateway is served: one uvicorn worker on uvloop with the httptools HTTP/1.1 parser.

``threadline serve gateway`` and the gateway benchmark both start it through ``run``, so the bench
measures the server that is deployed. uvloop and httptools are dependencies; they are named
here rather than left to uvicorn's "auto", which falls back to asyncio and h11 without a word
(measured: h11 alone was ~17% of the gateway's CPU).
"""

from __future__ import annotations

from typing import Any

LOOP = "uvloop"
HTTP = "httptools"
# Idle keep-alive connections are kept longer than clients and load balancers keep theirs (httpx 5 s,
# AWS ALB 60 s), so the client closes an idle connection first. With uvicorn's 5 s a request sent
# on a connection the gateway is closing that instant fails (ClientDisconnect here, a read error
# there): seen in the freshness bench, where 64 connections carry 20 requests/s.
KEEP_ALIVE_SECONDS = 75


def uvicorn_options(settings, **overrides: Any) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the gateway.

    proxy_headers off: the gateway reads X-Forwarded-* itself, from THREADLINE_TRUSTED_PROXIES
    only. No access log (the gateway logs each accepted contact itself)."""
    from connectors.gateway import shutdown_limit

    options: dict[str, Any] = dict(host=settings.gateway_host, port=settings.gateway_port, loop=LOOP, http=HTTP,
                                   log_config=None, access_log=False, proxy_headers=False,
                                   server_header=False, date_header=True, timeout_keep_alive=KEEP_ALIVE_SECONDS,
                                   timeout_graceful_shutdown=int(shutdown_limit(settings)))
    options.update(overrides)
    return options


def run(app, settings, **overrides: Any) -> None:
    import uvicorn

    uvicorn.run(app, **uvicorn_options(settings, **overrides))
