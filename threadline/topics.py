"""Apply the topic catalog to a cluster: create what is missing, report drift, never alter.

``apply(dry_run=True)`` is the plan: what it would create, with the exact partitions,
replication factor and configs, and the drift it would report; it changes nothing and
raises nothing for drift (the caller decides: ``threadline topics apply --dry-run`` exits 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource

from threadline.catalog import CATALOG, TopicSpec, drift
from threadline.errors import TopicDriftError
from threadline.kafka import explained_connection_errors
from threadline.settings import Settings


@dataclass(frozen=True)
class TopicPlan:
    """A topic as ``apply`` creates it: exactly these settings."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str]

    def describe(self) -> str:
        return f"partitions={self.partitions} replication={self.replication} " + " ".join(
            f"{k}={v}" for k, v in sorted(self.configs.items())
        )


@dataclass(frozen=True)
class ApplyReport:
    created: list[str]
    in_line: list[str]
    drifted: list[str]  # one line per difference; raised as TopicDriftError unless dry_run
    planned: list[str]  # dry run: the topics it would create
    plans: list[TopicPlan] = field(
        default_factory=list
    )  # the settings of each topic created (or, dry run, to be created)


def prefixed(specs: tuple[TopicSpec, ...], prefix: str) -> tuple[TopicSpec, ...]:
    """The catalog under ``<prefix>.<name>`` (a second tenant on one cluster; tests)."""
    return tuple(replace(s, name=f"{prefix}.{s.name}") for s in specs) if prefix else specs


def plan(spec: TopicSpec, replication: int) -> TopicPlan:
    return TopicPlan(spec.name, spec.partitions, replication, spec.configs())


class _FaustMetadataNoise(logging.Filter):
    """kafka-python decodes group members' metadata with the standard consumer protocol and warns,
    dumping the whole group, when it cannot; faust's members carry their own metadata, so every
    description of the worker's group would print that dump. It says nothing about lag."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("Unable to decode member_metadata", "Unable to decode member_assignment")
        )


logging.getLogger("kafka.admin._groups").addFilter(_FaustMetadataNoise())


def admin_client(settings: Settings, bootstrap_timeout_ms: int = 10000) -> KafkaAdminClient:
    """An admin client; a cluster it cannot bootstrap from is explained (wrong credentials, an
    untrusted certificate, no answer), not a retry loop in the log."""
    with explained_connection_errors(settings):
        return KafkaAdminClient(
            client_id="threadline-admin",
            request_timeout_ms=15000,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            **settings.kafka.client_config(),
        )


def describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, tuple[int, int, dict[str, str]]]:
    """Partitions, replication factor and effective configs of the topics that exist."""
    existing = set(admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    meta = {t["name"]: t for t in admin.describe_topics(present)}
    configs = admin.describe_configs([ConfigResource("TOPIC", n) for n in present], config_filter="all")
    out = {}
    for name in present:
        parts = meta[name]["partitions"]
        replication = len(parts[0]["replica_nodes"]) if parts else 0
        cfg = {k: v["value"] for k, v in configs["topic"][name].items()}
        out[name] = (len(parts), replication, cfg)
    return out


def apply(
    settings: Settings,
    specs: tuple[TopicSpec, ...] = CATALOG,
    *,
    dry_run: bool = False,
    admin: KafkaAdminClient | None = None,
) -> ApplyReport:
    own = admin is None
    admin = admin or admin_client(settings)
    try:
        found = describe(admin, [s.name for s in specs])
        drifted, in_line, missing = [], [], []
        for spec in specs:
            if spec.name in found:
                problems = drift(spec, *found[spec.name], want_replication=settings.kafka.replication_factor)
                (drifted.extend(problems) if problems else in_line.append(spec.name))
            else:
                missing.append(spec)
        plans = [plan(s, settings.kafka.replication_factor) for s in missing]
        created = []
        if missing and not dry_run:
            admin.create_topics(
                {
                    p.name: {"num_partitions": p.partitions, "replication_factor": p.replication, "configs": p.configs}
                    for p in plans
                }
            )
            created = [p.name for p in plans]
        report = ApplyReport(created, in_line, drifted, [p.name for p in plans] if dry_run else [], plans)
        if drifted and not dry_run:
            raise TopicDriftError(drifted)
        return report
    finally:
        if own:
            admin.close()
