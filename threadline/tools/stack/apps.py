"""Threadline's own components as background processes of the local stack (for the demo).

Each runs ``python -m threadline.tools.cli --home <state> ...`` so its command line names the state
folder. A component started by hand (``threadline serve gateway``, ``threadline worker``, ...)
claims a pid file in the same folder with its start time (``claim``), so ``threadline stop``,
``down`` and ``status`` know it too: ``run/app-<name>.pid``, or ``run/app-<name>-<pid>.pid`` for a
second one of the same kind (tests run several workers at once).

The gateway's ``POST /contacts`` and the read API need bearer tokens: when none are configured,
``with_local_tokens`` makes random ones in files of the state folder (``secrets/contact_tokens``:
one token for the ``api`` connector; ``secrets/api_tokens``: one per audience) that the apps read
and that clients find with ``token`` (values never printed).
"""

from __future__ import annotations

import secrets as pysecrets
import sys

import httpx

from threadline.process import instances, managed, wait_until
from threadline.settings import Settings

APPS = {
    "gateway": ["serve", "gateway"],
    "worker": ["worker"],
    "projector": ["project"],
    "api": ["serve", "api"],
}


LOCAL_TOKENS = {"contact_tokens": ("api",), "api_tokens": ("support", "sales", "marketing", "admin")}


def with_local_tokens(settings: Settings) -> Settings:
    """``settings`` with token files of the state folder for each token table not configured."""
    folder = settings.state_dir / "secrets"
    updates = {}
    for table, names in LOCAL_TOKENS.items():
        if getattr(settings.auth, table) is not None or getattr(settings.auth, f"{table}_file") is not None:
            continue
        path = folder / table
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{name}={pysecrets.token_urlsafe(24)}\n" for name in names))
            path.chmod(0o600)
        updates[f"{table}_file"] = path
    return settings.model_copy(update=updates)


def token(settings: Settings, table: str, name: str) -> str:
    """The token a local client sends: of ``table`` (api_tokens or contact_tokens) for ``name``
    (an audience or a connector), configured or made by ``with_local_tokens``."""
    from threadline.auth import token_for
    from threadline.errors import ConfigError

    found = token_for(with_local_tokens(settings), table, name)
    if found is None:
        raise ConfigError(f"no token of THREADLINE_{table.upper()} grants {name}")
    return found


def start(settings: Settings, names=tuple(APPS)) -> list[str]:
    settings = with_local_tokens(settings)
    started = []
    for name in names:
        m = managed(settings, name)
        if m.running():
            continue
        m.start(
            [sys.executable, "-m", "threadline.tools.cli", "--home", str(settings.state_dir), *APPS[name]],
            env={**settings.to_env(), "THREADLINE_LOG_FORMAT": "json"},
        )
        started.append(name)
    try:
        for name in ("gateway", "api"):
            if name in names:
                wait_until(lambda: _healthy(f"{url(settings, name)}/healthz"), 60, what=name)
    except BaseException:
        stop(settings, started)  # a start that fails leaves nothing running (a worker left over joins the group)
        raise
    return started


def _healthy(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def url(settings: Settings, name: str) -> str | None:
    """Where a component serves /livez, /readyz and /metrics (None: it serves none)."""
    host_port = {
        "gateway": (settings.endpoints.gateway_host, settings.endpoints.gateway_port),
        "api": (settings.endpoints.api_host, settings.endpoints.api_port),
        "worker": (settings.endpoints.ops_host, settings.endpoints.worker_ops_port),
        "projector": (settings.endpoints.ops_host, settings.endpoints.projector_ops_port),
    }[name]
    if not host_port[1]:
        return None
    host = "127.0.0.1" if host_port[0] in ("0.0.0.0", "::") else host_port[0]
    return f"http://{host}:{host_port[1]}"


def readiness(base_url: str) -> tuple[bool, str]:
    """``(ready, detail)`` from the component's /readyz: the dependencies it says are failing."""
    r = httpx.get(f"{base_url}/readyz", timeout=3)
    if r.status_code == 200:
        return True, ""
    failing = r.json().get("failing") if r.headers.get("content-type", "").startswith("application/json") else None
    return False, f"not ready: {', '.join(failing)}" if failing else f"/readyz answered {r.status_code}"


def stop(settings: Settings, names=tuple(APPS)) -> list[str]:
    """Stop every process of these components, however it was started; the names that ran."""
    stopped = []
    for name in names:
        ran = [m.stop(timeout=15) for m in instances(settings, name)]
        managed(settings, name).pid_file.unlink(missing_ok=True)
        if any(ran):
            stopped.append(name)
    return stopped
