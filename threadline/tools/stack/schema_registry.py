"""A Confluent-compatible schema registry for the local stack: Apicurio Registry 3.0.9.

Maven Central has only the plain application jar, not a runnable build, so deploy/local/registry
re-runs the Quarkus build over it (``build.sh``, run by ``threadline setup``; jars cached in ~/.m2) and ``run.sh``
starts it on loopback with its H2 database in the state folder, so schema ids survive a
restart (records on Kafka carry those ids). The API the codec uses is ``/apis/ccompat/v7``.
"""

from __future__ import annotations

from collections.abc import Callable
import os

import httpx

from threadline.errors import ConfigError
from threadline.process import Managed, port_open, wait_until
from threadline.settings import Settings
from threadline.tools.stack.kafka_broker import java_bin
from threadline.tools.stack.paths import deploy_local

NAME = "registry"


def folder():
    return deploy_local() / "registry"


def runner_jar():
    return folder() / "target" / "threadline-local-registry-0.0.0-local-runner.jar"


def managed(settings: Settings) -> Managed:
    return Managed(NAME, settings.state_dir)


def ready(settings: Settings) -> bool:
    return httpx.get(f"{settings.registry.url}/subjects", timeout=3).status_code == 200


def start(settings: Settings, *, check_built: Callable[[], None], timeout: float = 120.0) -> bool:
    m = managed(settings)
    if m.running():
        wait_until(lambda: ready(settings), timeout, what="schema registry")
        return False
    if port_open("127.0.0.1", settings.registry.port):
        raise ConfigError(
            f"127.0.0.1:{settings.registry.port} is taken by a process this state folder did not start; "
            "stop it, or set THREADLINE_REGISTRY_URL to use it"
        )
    check_built()  # built by the set-up step (threadline setup), never here
    db = settings.state_dir / "registry" / "db"
    db.parent.mkdir(parents=True, exist_ok=True)
    m.launch(
        ["bash", str(folder() / "run.sh")],
        ready=lambda: ready(settings),
        timeout=timeout,
        cwd=folder(),
        env={
            "JAVA_HOME": os.path.dirname(os.path.dirname(java_bin())),
            "REGISTRY_PORT": str(settings.registry.port),
            "REGISTRY_DB_URL": f"jdbc:h2:file:{db};DB_CLOSE_ON_EXIT=FALSE",
            # -Dthreadline.home puts the state folder on the command line: that is how pid files are checked.
            "REGISTRY_JAVA_OPTS": f"-Xmx256m -XX:+UseSerialGC -Dthreadline.home={settings.state_dir}",
        },
    )
    return True
