"""The set-up step: everything slow or downloaded, done once, before any test or demo runs.

``threadline setup`` (``make setup``; ``make test`` and ``make demo`` depend on it) fetches
and builds every part the local stack, the tests and the demo start later:

- Kafka's jars from Maven Central (``mvn dependency:copy-dependencies``, into the checkout's build folder, ``.threadline/lib``, shared by every state folder);
- the schema registry (Apicurio, a Quarkus build over Maven Central jars, ~5 min cold);
- the docker compose CLI from the Go module proxy (for ``docker compose config`` in the tests);
- the Strimzi CRD generator's jars (the deploy tests regenerate the CRDs and compare them).

Starting a part never builds it: ``stack.up`` on a machine where this step did not run says
which part is missing and how to build it (``NotBuiltError``), within seconds, so no test
timeout ever covers a download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from threadline.errors import ConfigError
from threadline.settings import Settings
from threadline.tools.stack.paths import REPO_ROOT, build_root


@dataclass(frozen=True)
class Step:
    """One thing to fetch or build. It is done when its output exists *and* the digest of its
    inputs (the recipe files) equals the one recorded when it was last built: a changed pom or
    build script builds it again."""

    name: str
    what: str
    output: Callable[[Settings], bool]
    run: Callable[[Settings, Path], None]
    inputs: tuple[str, ...]  # paths relative to the repository; folders count every file under them
    needed: bool = True  # False: a tool only the deploy tests use; skipped with a note when its toolchain is absent

    def digest_file(self, s: Settings) -> Path:
        return build_root() / "setup" / f"{self.name}.inputs"

    def digest(self, s: Settings) -> str:
        h = hashlib.sha256(f"{self.name}:{s.stack.kafka_version}".encode())
        for rel in self.inputs:
            root = REPO_ROOT / rel
            files = (
                sorted(p for p in root.rglob("*") if p.is_file() and not {"target", "stub-repo"} & set(p.parts))
                if root.is_dir()
                else [root]
            )
            for f in files:
                h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes())
        return h.hexdigest()

    def done(self, s: Settings) -> bool:
        f = self.digest_file(s)
        return self.output(s) and f.exists() and f.read_text() == self.digest(s)

    def record(self, s: Settings) -> None:
        self.digest_file(s).parent.mkdir(parents=True, exist_ok=True)
        self.digest_file(s).write_text(self.digest(s))


def _logged(argv: list[str], log: Path, *, env: dict | None = None, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise ConfigError(f"{' '.join(argv[:3])} failed (exit {result.returncode}); log: {log}\n{tail}")


def _kafka_done(s: Settings) -> bool:
    from threadline.tools.stack import kafka_broker

    return (kafka_broker.lib_dir(s) / ".complete").exists()


def _kafka_run(s: Settings, log: Path) -> None:
    from threadline.tools.stack import kafka_broker

    (kafka_broker.lib_dir(s) / ".complete").unlink(missing_ok=True)  # inputs changed or --force: resolve again
    kafka_broker.ensure_jars(s)


def _registry_done(s: Settings) -> bool:
    from threadline.tools.stack import schema_registry

    return schema_registry.runner_jar().exists()


def _registry_run(s: Settings, log: Path) -> None:
    from threadline.tools.stack import schema_registry

    _logged(["bash", str(schema_registry.folder() / "build.sh"), "-q"], log)
    if not schema_registry.runner_jar().exists():
        raise ConfigError(f"the schema registry build finished without {schema_registry.runner_jar()}; log: {log}")


COMPOSE_SCRIPT = REPO_ROOT / "deploy" / "compose" / "tools" / "build-compose.sh"
CRDS_POM = REPO_ROOT / "deploy" / "k8s" / "crds" / "pom.xml"


def compose_binary(s: Settings) -> Path:
    return build_root() / "tools" / "docker" / "cli-plugins" / "docker-compose"


def _compose_done(s: Settings) -> bool:
    return compose_binary(s).exists()


def _compose_run(s: Settings, log: Path) -> None:
    compose_binary(s).unlink(missing_ok=True)
    _logged(["bash", str(COMPOSE_SCRIPT)], log, env={"THREADLINE_HOME": str(build_root())})


def _crds_stamp(s: Settings) -> Path:
    return build_root() / "tools" / "strimzi-crd-generator.resolved"


def _crds_done(s: Settings) -> bool:
    return _crds_stamp(s).exists()


def _crds_run(s: Settings, log: Path) -> None:
    _logged(["mvn", "-B", "-q", "-f", str(CRDS_POM), "dependency:resolve"], log)
    _crds_stamp(s).parent.mkdir(parents=True, exist_ok=True)
    _crds_stamp(s).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


STEPS = (
    Step("kafka", "Kafka broker jars (Maven Central)", _kafka_done, _kafka_run, ("deploy/local/pom.xml",)),
    Step(
        "registry",
        "schema registry build (Quarkus, Maven Central)",
        _registry_done,
        _registry_run,
        ("deploy/local/registry",),
    ),
    Step(
        "compose",
        "docker compose CLI (Go module proxy)",
        _compose_done,
        _compose_run,
        ("deploy/compose/tools/build-compose.sh",),
        needed=False,
    ),
    Step(
        "crds",
        "Strimzi CRD generator jars (Maven Central)",
        _crds_done,
        _crds_run,
        ("deploy/k8s/crds/pom.xml",),
        needed=False,
    ),
)


class NotBuiltError(ConfigError):
    """A part the local stack would start has not been fetched or built by the set-up step."""

    def __init__(self, part: str, what: str):
        super().__init__(
            f"{part} is not built ({what}): run `make setup` (or `threadline setup`) first; "
            "starting a part never downloads or builds it"
        )
        self.part = part


def require(settings: Settings, name: str) -> None:
    step = next(s for s in STEPS if s.name == name)
    if not step.done(settings):
        raise NotBuiltError(name, step.what)


def missing(settings: Settings) -> list[str]:
    return [s.name for s in STEPS if not s.done(settings)]


def toolchain_for(step: Step) -> str | None:
    """The command a step needs that this machine lacks, or None."""
    need = {"kafka": "mvn", "registry": "mvn", "compose": "go", "crds": "mvn"}[step.name]
    return None if shutil.which(need) else need


def run(
    settings: Settings,
    *,
    only: tuple[str, ...] = (),
    force: bool = False,
    report: Callable[[str, str, float], None] = lambda name, state, seconds: None,
) -> dict[str, str]:
    """Run every step not done yet; ``report(name, state, seconds)`` after each one.
    States: ``done`` (already there), ``built``, ``skipped: <why>`` (an optional tool whose
    toolchain is absent). A required step that fails raises ConfigError naming it and its log."""
    results = {}
    for step in STEPS:
        if only and step.name not in only:
            continue
        if step.done(settings) and not force:
            results[step.name] = "done"
            report(step.name, "done", 0.0)
            continue
        absent = toolchain_for(step)
        if absent and not step.needed:
            results[step.name] = f"skipped: `{absent}` not found"
            report(step.name, results[step.name], 0.0)
            continue
        if absent:
            raise ConfigError(f"{step.name}: `{absent}` not found; it is needed for the {step.what}")
        t0 = time.monotonic()
        step.run(settings, build_root() / "logs" / f"setup-{step.name}.log")
        step.record(settings)
        results[step.name] = "built"
        report(step.name, "built", time.monotonic() - t0)
    return results
