"""/docs and /redoc of the gateway and the read API work without internet: the page and every
script, stylesheet and icon it references come from the running server itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from threadline.process import free_port


@pytest.fixture(scope="module")
def servers(services, tmp_path_factory):
    env = {
        **os.environ,
        **services.env(),
        "THREADLINE_HOME": str(tmp_path_factory.mktemp("docs-home")),
        "THREADLINE_GATEWAY_PORT": str(free_port()),
        "THREADLINE_API_PORT": str(free_port()),
    }
    cli = [sys.executable, "-m", "threadline.tools.cli"]
    for name in ("gateway", "api"):
        r = subprocess.run([*cli, "start", name], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    yield {
        "gateway": f"http://127.0.0.1:{env['THREADLINE_GATEWAY_PORT']}",
        "api": f"http://127.0.0.1:{env['THREADLINE_API_PORT']}",
    }
    subprocess.run([*cli, "down"], env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize("server", ["gateway", "api"])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_of_the_docs_page_comes_from_the_server(servers, server, page):
    base = servers[server]
    resp = httpx.get(base + page, timeout=10)
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', resp.text) + re.findall(r"url: '([^']+)'", resp.text)
    assert len(refs) >= 2, resp.text
    for ref in refs:
        url = urljoin(base + page, ref)
        assert urlparse(url).netloc == urlparse(base).netloc, f"{page} of the {server} loads {ref} from elsewhere"
        asset = httpx.get(url, timeout=10)
        assert asset.status_code == 200 and asset.content, (ref, asset.status_code)
    scripts = [r for r in refs if r.endswith(".js")]
    assert scripts, refs
    assert all(len(httpx.get(urljoin(base, s), timeout=10).content) > 100_000 for s in scripts)
