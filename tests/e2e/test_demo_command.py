"""`threadline demo` (what `make demo` runs), as a user runs it: the command itself, on the test
session's stack, with the components on ports of their own; it tells the story and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from threadline.process import free_port

STOP = ("gateway", "api", "worker", "projector")


@pytest.fixture
def demo_env(services):
    if services.source != "local-stack":
        pytest.skip("the demo starts the local stack; services come from elsewhere here")
    env = {
        **os.environ,
        **services.env(),
        "THREADLINE_LOG_FORMAT": "json",
        **{f"THREADLINE_{name}_PORT": str(free_port()) for name in ("GATEWAY", "API")},
        "THREADLINE_WORKER_OPS_PORT": "0",
        "THREADLINE_PROJECTOR_OPS_PORT": "0",
    }
    yield env
    for name in STOP:
        subprocess.run(
            [sys.executable, "-m", "threadline.tools.cli", "stop", name], env=env, capture_output=True, timeout=120
        )


def test_the_demo_command_tells_the_story_to_every_audience(demo_env):
    done = subprocess.run(
        [sys.executable, "-m", "threadline.tools.cli", "demo"],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert out.count("accepted, resolved and projected") == 10, out[-4000:]
    for who in ("Giulia", "Sanne", "Emre"):
        assert who in out
    assert "Traceback" not in out
