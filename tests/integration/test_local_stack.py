"""The local stack's lifecycle: `up` twice starts nothing twice, `down` leaves no process.

Runs a second, private stack (its own state folder and ports) so the shared one is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from threadline.settings import Settings
from threadline.process import free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("THREADLINE_KAFKA_BOOTSTRAP") is not None,
    reason="services come from the environment: no local stack to manage",
)


def _ours(state_dir) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(state_dir) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _cli(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_twice_starts_one_broker_and_down_leaves_no_process(tmp_path):
    home = tmp_path / "stack"
    settings = Settings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        pg_port=free_port(),
        registry_url=f"http://127.0.0.1:{free_port()}/apis/ccompat/v7",
    )
    env = {**os.environ, **settings.to_env()}
    env.pop("THREADLINE_PG_DSN", None)  # the private stack runs its own embedded PostgreSQL
    try:
        first = _cli(env, "up")
        assert first.returncode == 0, first.stderr
        assert "kafka: started" in first.stdout
        kafka_pid = int((home.resolve() / "run" / "kafka.pid").read_text())

        second = _cli(env, "up")
        assert second.returncode == 0, second.stderr
        assert "kafka: already running" in second.stdout
        assert int((home.resolve() / "run" / "kafka.pid").read_text()) == kafka_pid
        brokers = [p for p in _ours(home.resolve()) if "kafka.Kafka" in " ".join(p.cmdline())]
        assert [p.pid for p in brokers] == [kafka_pid]

        status = _cli(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("yes") >= 3
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout and "postgres" in down.stdout
    leftovers = [(p.pid, p.name()) for p in _ours(home.resolve())]
    assert leftovers == []
    status = _cli(env, "status")
    assert status.returncode == 1  # nothing answers any more
