"""The worker's runtime, without a broker: its event loop is uvloop's, and once it has started the
garbage collector no longer walks what existed at start-up (threadline.collector)."""

from __future__ import annotations

import asyncio
import gc

import faust
import pytest

import streams.worker as worker_mod
from streams.app import create_app
from threadline.settings import CodecKind, Settings


@pytest.fixture
def app(tmp_path):
    return create_app(
        Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT), app_id="runtime-test", stages=("identity",)
    )


@pytest.fixture
def restore_runtime():
    policy, threshold = asyncio.get_event_loop_policy(), gc.get_threshold()
    yield
    asyncio.set_event_loop_policy(policy)
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_the_worker_runs_its_app_on_uvloop(app, tmp_path, monkeypatch, restore_runtime):
    import uvloop

    seen = {}

    def execute(self):
        seen["loop"] = type(self.loop)
        self.loop.close()

    monkeypatch.setattr(worker_mod.StreamsWorker, "execute_from_commandline", execute)
    monkeypatch.setattr(worker_mod.ops, "serve", lambda *a, **k: None)
    monkeypatch.setattr(worker_mod.signal, "signal", lambda *a: None)
    worker_mod.run_worker(app, Settings(home=tmp_path))
    assert seen["loop"] is uvloop.Loop


def test_once_started_the_worker_freezes_the_start_up_heap_and_raises_the_young_threshold(
    app, monkeypatch, restore_runtime
):
    async def started(self):
        return None

    monkeypatch.setattr(faust.Worker, "on_startup_finished", started)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    loop = asyncio.new_event_loop()
    try:
        worker = worker_mod.StreamsWorker(app, loglevel="WARNING", quiet=True, loop=loop)
        loop.run_until_complete(worker.on_startup_finished())
    finally:
        loop.close()
    assert gc.get_threshold() == (worker_mod.GC_GEN0_THRESHOLD, 10, 10)
    assert worker_mod.GC_GEN0_THRESHOLD > 700
    assert gc.get_freeze_count() > 0  # what existed at start-up is out of the collector's sight
