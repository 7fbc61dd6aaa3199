"""schemathesis ``--checks all`` against both OpenAPI documents, on the real stack.

The gateway (on this test's throw-away topics) and the read API (on projections built from the
story of tests/integration/projectors) run in this process under uvicorn, on real Kafka,
PostgreSQL and the schema registry; schemathesis's CLI runs against each with a valid token
(so the routes behind auth are exercised; its ``ignored_auth`` check also sends none). Passing
means: no 5xx, every status and body as the document says, bad input rejected, good input
accepted. Bounded: ``MAX_EXAMPLES`` per operation and phase (about a minute each here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent / "projectors"))

import story as st  # noqa: E402
from fixtures.providers import SECRETS  # noqa: E402
from fixtures.tokens import API_TOKENS, CONTACT_TOKEN, token_settings  # noqa: E402
from projectors.engine.runner import Sources  # noqa: E402
from threadline.catalog import EVENT_PARTITIONS  # noqa: E402
from threadline.process import free_port  # noqa: E402
from fixtures.projections import drop_projections

MAX_EXAMPLES = int(os.environ.get("THREADLINE_FUZZ_MAX_EXAMPLES", "100"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


class Served:
    """A FastAPI app under uvicorn in a daemon thread (its lifespan runs: real producer, pool)."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def fuzz(base: str, token: str, tmp_path: Path) -> subprocess.CompletedProcess:
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        "11",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--phases",
        "examples,coverage,fuzzing",
        "--no-color",
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "SCHEMATHESIS_HOOKS": ""}
    )


def report(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-12000:]


def summary(result: subprocess.CompletedProcess) -> str:
    """schemathesis's summary: operations, phases, and how many cases it generated."""
    out = result.stdout
    return out[out.find("API Operations:") :] if "API Operations:" in out else out[-2000:]


@pytest.fixture
def gateway_app(settings, new_topic, tmp_path):
    from connectors.gateway import create_app
    from schemas.codec import make_codec

    s = settings.model_copy(
        update={**{k: SecretStr(v) for k, v in SECRETS.items()}, **token_settings(), "home": tmp_path}
    )
    app = create_app(
        s,
        codec_factory=lambda: make_codec(s),
        contacts_topic=new_topic(partitions=EVENT_PARTITIONS),
        dlq_topic=new_topic(),
    )
    with Served(app) as served:
        yield served


@pytest.fixture
def api_app(settings, new_topic, unique, catalog_topics):
    import psycopg

    from projectors.api import create_app
    from schemas.codec import make_codec

    prefixed = settings.model_copy(update={"projection_prefix": f"f{unique}_", **token_settings()})
    sources = Sources(*(new_topic(partitions=3) for _ in range(3)))
    codec = make_codec(prefixed)
    st.publish(prefixed, codec, sources, st.build(unique))
    st.project(prefixed, sources, codec=codec)
    try:
        with Served(create_app(prefixed)) as served:
            yield served
    finally:
        with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as pg:
            drop_projections(pg, f"f{unique}_")


def test_the_gateway_passes_every_schemathesis_check(gateway_app, tmp_path):
    assert httpx.get(f"{gateway_app.url}/openapi.json").status_code == 200
    started = time.monotonic()
    result = fuzz(gateway_app.url, CONTACT_TOKEN, tmp_path)
    print(f"gateway: schemathesis took {time.monotonic() - started:.0f} s\n{summary(result)}")
    assert result.returncode == 0, report(result)
    assert "Test cases:" in result.stdout, report(result)


def test_the_read_api_passes_every_schemathesis_check(api_app, tmp_path):
    started = time.monotonic()
    result = fuzz(api_app.url, API_TOKENS["admin"], tmp_path)
    print(f"read API: schemathesis took {time.monotonic() - started:.0f} s\n{summary(result)}")
    assert result.returncode == 0, report(result)
    assert "Test cases:" in result.stdout, report(result)
