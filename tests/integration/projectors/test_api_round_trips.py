"""The read API's hot reads take one connection of the pool each (the card, the identity lookup and
the sales context resolve a merged id in the same statements, not in a checkout of their own) and
answer as before, a merged id with its survivor; ``threadline serve api`` with
THREADLINE_API_WORKERS=2 runs two worker processes on one port that answer authenticated reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures.tokens import API_TOKENS, bearer, token_settings
from projectors.api import create_app
from threadline.process import free_port, terminate_tree


@pytest.fixture
def counted(prefixed, built):
    """A client of the API and the list of pool checkouts its requests made."""
    app = create_app(prefixed.model_copy(update=token_settings()))
    with TestClient(app, headers=bearer(API_TOKENS["admin"])) as client:
        pool = app.state.pool
        real = pool.connection
        checkouts: list[int] = []

        @asynccontextmanager
        async def connection(*args, **kwargs):
            checkouts.append(1)
            async with real(*args, **kwargs) as conn:
                yield conn

        pool.connection = connection
        yield client, checkouts


def test_each_hot_read_takes_one_connection_and_a_merged_id_reads_its_survivor(counted, built, unique):
    client, checkouts = counted
    reads = {
        "card": f"/customers/{built.giulia}",
        "card of the absorbed id": f"/customers/{built.giulia_old}",
        "lookup": f"/customers/by-identity?kind=chat_visitor&value=v-{unique}",
        "sales": f"/sales/customers/{built.giulia}",
        "sales of the absorbed id": f"/sales/customers/{built.giulia_old}",
    }
    answers = {}
    for name, url in reads.items():
        checkouts.clear()
        r = client.get(url)
        assert r.status_code == 200, (name, r.text)
        assert len(checkouts) == 1, f"{name}: {len(checkouts)} checkouts"
        answers[name] = r.json()
    card, old = answers["card"], answers["card of the absorbed id"]
    assert old["customer_id"] == card["customer_id"] == built.giulia and old["requested_id"] == built.giulia_old
    assert {**old, "requested_id": built.giulia} == card and card["merged_ids"] == [built.giulia_old]
    lookup = answers["lookup"]
    assert lookup["customer_id"] == built.giulia and lookup["matched"]["value"] == f"v-{unique}"
    assert {k: v for k, v in lookup.items() if k not in ("matched", "looked_up", "also_matching")} == card
    sales, sales_old = answers["sales"], answers["sales of the absorbed id"]
    assert sales["customer_id"] == sales_old["customer_id"] == built.giulia
    assert sales_old["requested_id"] == built.giulia_old and {**sales_old, "requested_id": built.giulia} == sales
    checkouts.clear()
    assert client.get("/customers/nobody-here").json() == {"error": "not_found", "detail": "no customer nobody-here"}
    assert client.get("/sales/customers/nobody-here").status_code == 404 and len(checkouts) == 2


def _cmdline(pid: str) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def test_two_api_workers_answer_on_one_port(prefixed, built):
    port = free_port()
    s = prefixed.model_copy(update={**token_settings(), "api_port": port, "api_workers": 2})
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.tools.cli", "serve", "api"],
        env={**os.environ, **s.to_env(), "THREADLINE_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[str] = []
        while time.monotonic() < deadline:
            try:
                children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
            except OSError:
                children = []
            workers = [c for c in children if b"spawn_main" in _cmdline(c)]  # not a resource tracker
            try:
                if len(workers) >= 2 and httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the API exited"
            time.sleep(0.5)
        assert len(workers) >= 2, f"worker processes: {workers}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get(f"/customers/{built.giulia}").status_code == 401
            for _ in range(20):  # connections land on either worker
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=bearer(API_TOKENS["support"])) as c:
                    r = c.get(f"/customers/{built.giulia}")
                    assert r.status_code == 200 and r.json()["customer_id"] == built.giulia
    finally:
        terminate_tree(proc.pid, timeout=30)
