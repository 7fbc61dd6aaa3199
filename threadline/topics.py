"""Apply the topic catalog to a cluster: create what is missing, report drift, never alter."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource

from threadline.catalog import CATALOG, TopicSpec, drift
from threadline.errors import TopicDriftError
from threadline.settings import Settings


@dataclass(frozen=True)
class ApplyReport:
    created: list[str]
    in_line: list[str]
    drifted: list[str]
    planned: list[str]


def admin_client(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(client_id="threadline-admin", request_timeout_ms=15000,
                            **settings.kafka_client_config())


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


def apply(settings: Settings, specs: tuple[TopicSpec, ...] = CATALOG, *, dry_run: bool = False,
          admin: KafkaAdminClient | None = None) -> ApplyReport:
    own = admin is None
    admin = admin or admin_client(settings)
    try:
        found = describe(admin, [s.name for s in specs])
        drifted, in_line, missing = [], [], []
        for spec in specs:
            if spec.name in found:
                problems = drift(spec, *found[spec.name], want_replication=settings.replication_factor)
                (drifted.extend(problems) if problems else in_line.append(spec.name))
            else:
                missing.append(spec)
        created = []
        if missing and not dry_run:
            admin.create_topics({
                s.name: {"num_partitions": s.partitions, "replication_factor": settings.replication_factor,
                         "configs": s.configs()} for s in missing
            })
            created = [s.name for s in missing]
        report = ApplyReport(created, in_line, drifted, [s.name for s in missing] if dry_run else [])
        if drifted:
            raise TopicDriftError(drifted)
        return report
    finally:
        if own:
            admin.close()
