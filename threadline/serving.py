"""How Threadline's HTTP services are served by uvicorn (the gateway: connectors/server.py; the read
API: projectors/cli.py): uvloop with the httptools HTTP/1.1 parser, each response written to the
socket once, the garbage collector tuned once the app has started.

uvloop and httptools are dependencies; they are named rather than left to uvicorn's "auto", which
falls back to asyncio and h11 without a word (measured on the gateway: h11 alone was ~17% of its CPU).

uvicorn writes a response's status line and headers, then its body, each with a ``write`` of its
own: two ``send()`` system calls per response (uvloop writes at once when nothing is queued).
``OneWriteHttpToolsProtocol`` is uvicorn's httptools protocol over a transport that gathers the
writes of one turn of the event loop and sends them together at the end of it (``OneWritePerTurn``).
uvicorn takes it by name (``HTTP_PROTOCOL``), so worker processes find it too.

The collector (``tune_gc``): a request allocates a few hundred container objects that reference
counting frees when it ends, but with 32 requests in flight the young generation crosses CPython's
threshold of 700 every few requests, so a collection ran every ~20 requests and promoted the
in-flight requests' objects towards the old generation, whose collections walk every object of
the process (~110,000 after start-up: FastAPI, pydantic, the schemas). Measured under the gateway
bench's wrk load: 16-27 µs of CPU per request in the collector. Once the app has started, what
exists is moved out of the collector's sight (``gc.freeze``) and the young generation's threshold
raised to ``GC_GEN0_THRESHOLD``: collections then follow real cyclic garbage, not requests in flight.
"""

from __future__ import annotations

from threadline import collector

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOOP = "uvloop"
HTTP = "httptools"
HTTP_PROTOCOL = "threadline.serving:OneWriteHttpToolsProtocol"
# Idle keep-alive connections are kept longer than clients and load balancers keep theirs (httpx 5 s,
# AWS ALB 60 s), so the client closes an idle connection first. With uvicorn's 5 s a request sent
# on a connection the server is closing that instant fails (ClientDisconnect here, a read error
# there): seen in the freshness bench, where 64 connections carry 20 requests/s.
KEEP_ALIVE_SECONDS = 75
# Net new container objects between two young-generation collections (CPython's default: 700).
# What cyclic garbage waits for a collection is bounded by it: a few MB at most.
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Once the app has started: ``threadline.collector.tune_gc`` with the servers' threshold."""
    collector.tune_gc(GC_GEN0_THRESHOLD)


class OneWritePerTurn:
    """A transport whose writes within one turn of the event loop go out as one ``write`` of the
    real transport, at the end of that turn, in order; ``close`` and ``write_eof`` send what is
    gathered first. Everything else is the real transport's."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport, loop):
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through ``OneWritePerTurn``."""

    def connection_made(self, transport) -> None:
        super().connection_made(OneWritePerTurn(transport, self.loop))  # type: ignore[arg-type]
