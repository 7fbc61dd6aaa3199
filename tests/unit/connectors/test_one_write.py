"""connectors.server.OneWritePerTurn: what uvicorn writes for one response (status line and
headers, then the body) reaches the socket as one write, in order; closing sends what is
gathered first. A fake transport counts the writes; no sockets, no timing."""

from __future__ import annotations

import asyncio

from connectors.server import OneWritePerTurn, uvicorn_options
from threadline.settings import Settings


class CountingTransport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def test_the_writes_of_one_turn_go_out_as_one_in_order():
    async def run():
        real = CountingTransport()
        t = OneWritePerTurn(real, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert real.writes == [] and t.get_write_buffer_size() == 46
        await asyncio.sleep(0)
        t.write(b"next")
        await asyncio.sleep(0)
        return real

    real = asyncio.run(run())
    assert real.writes == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_was_gathered_first_and_the_rest_is_the_real_transports():
    async def run():
        real = CountingTransport()
        t = OneWritePerTurn(real, asyncio.get_running_loop())
        t.write(b"a")
        t.write(b"b")
        t.close()
        await asyncio.sleep(0)
        assert t.get_extra_info("peername") == ("127.0.0.1", 5000) and t.is_closing()
        return real

    real = asyncio.run(run())
    assert real.writes == [b"ab"] and real.closed


def test_the_gateway_is_served_by_the_one_write_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    protocol = uvicorn_options(Settings(_env_file=None))["http"]
    assert issubclass(protocol, HttpToolsProtocol)
