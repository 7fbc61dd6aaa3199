"""threadline start | stop | restart COMPONENT and down, on the real stack, in a state folder of
the test's own (the shared stack's parts are only used, never stopped): a restart picks up the
calling environment's settings; a component started by hand is known to status, stop and down;
after down no process of it is left (checked in the process table, not in pid files)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from threadline.process import free_port


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "threadline.tools.cli", *args]


@pytest.fixture
def env(services, tmp_path):
    return {
        **os.environ,
        **services.env(),
        "THREADLINE_HOME": str(tmp_path / "home"),
        "THREADLINE_GATEWAY_PORT": str(free_port()),
        "THREADLINE_API_PORT": str(free_port()),
    }


def run(env, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env={**env, **extra}, capture_output=True, text=True, timeout=120)


def big_post(env) -> int:
    url = f"http://127.0.0.1:{env['THREADLINE_GATEWAY_PORT']}/webhooks/chat"
    return httpx.post(
        url, content=b"{" + b" " * 2000 + b"}", headers={"content-type": "application/json"}, timeout=10
    ).status_code


def gateway_pids(env) -> list[int]:
    """Every process in the process table that serves this test's gateway port."""
    port = int(env["THREADLINE_GATEWAY_PORT"])
    pids = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            pids.append(conn.pid)
    return pids


def test_restart_applies_a_new_setting_and_stop_ends_the_process(env):
    started = run(env, "start", "gateway", THREADLINE_MAX_BODY_BYTES="1000000")
    assert started.returncode == 0, started.stderr
    try:
        assert big_post(env) != 413  # unsigned: 401, but not too large
        pid = gateway_pids(env)
        restarted = run(env, "restart", "gateway", THREADLINE_MAX_BODY_BYTES="100")
        assert restarted.returncode == 0, restarted.stderr
        assert big_post(env) == 413
        assert gateway_pids(env) and gateway_pids(env) != pid
    finally:
        stopped = run(env, "stop", "gateway")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert gateway_pids(env) == []


def test_status_and_down_know_a_component_started_by_hand(env):
    by_hand = subprocess.Popen(cli("serve", "gateway"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not gateway_pids(env):
            assert by_hand.poll() is None
            time.sleep(0.3)
        assert gateway_pids(env) == [by_hand.pid]
        status = run(env, "status")
        line = next(ln for ln in status.stdout.splitlines() if ln.strip("│ ").startswith("gateway"))
        assert "running" in line and "stopped" not in line, status.stdout
        down = run(env, "down")
        assert down.returncode == 0 and "app-gateway" in down.stdout, down.stdout + down.stderr
        assert by_hand.wait(timeout=30) is not None
        assert gateway_pids(env) == [] and not psutil.pid_exists(by_hand.pid)
    finally:
        if by_hand.poll() is None:
            by_hand.kill()


def test_an_unknown_component_is_a_usage_error(env):
    r = run(env, "start", "kafak")
    assert r.returncode == 2 and "unknown component 'kafak'" in r.stderr
