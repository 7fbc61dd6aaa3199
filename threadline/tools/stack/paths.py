"""Where the local stack's files live: recipes in deploy/local, what the set-up step builds in the
checkout's build folder (shared by every state folder: a test's private stack or a second
THREADLINE_HOME uses the same jars and tools), state in the state folder."""

from __future__ import annotations

from pathlib import Path

from threadline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"
BUILD_ROOT = REPO_ROOT / ".threadline"  # lib/ (Kafka's jars), tools/, setup/ (digests of the recipes)


def build_root() -> Path:
    return BUILD_ROOT


def deploy_local() -> Path:
    if not (DEPLOY_LOCAL / "pom.xml").exists():
        raise ConfigError(
            f"{DEPLOY_LOCAL} not found: the local stack runs from a source checkout "
            "(pip install -e .); elsewhere point THREADLINE_KAFKA_BOOTSTRAP and THREADLINE_PG_DSN at your services"
        )
    return DEPLOY_LOCAL
