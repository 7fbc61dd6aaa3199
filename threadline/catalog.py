"""The topic catalog: every topic Threadline reads or writes, declared once.

``threadline topics apply`` creates what is missing and reports drift — a topic that exists
with settings other than these — as an error; it never silently alters a topic. The Kubernetes
KafkaTopic resources are generated from this list too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INFINITE = "-1"
THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)

# Partition count of every keyed event topic. Stream tables' changelogs must match it
# (faust raises PartitionsMismatch otherwise), so it is one constant, not a per-topic choice.
EVENT_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value: str
    cleanup_policy: str = "delete"
    retention_ms: str = INFINITE
    doc: str = ""
    extra_configs: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": self.retention_ms}
        if self.cleanup_policy == "delete" and self.retention_ms == INFINITE:
            cfg["retention.bytes"] = INFINITE
        cfg.update(self.extra_configs)
        return cfg


CONTACTS = TopicSpec(
    "contacts.v1", EVENT_PARTITIONS, key="primary channel identity (kind:value)", value="contact",
    doc="System of record: every contact from every channel. Infinite retention, never compacted.",
)
INGEST_DLQ = TopicSpec(
    "ingest.dlq.v1", 1, key="connector", value="raw provider payload; reason and connector in headers",
    retention_ms=THIRTY_DAYS_MS, doc="What a connector could not map, with the raw payload and the reason.",
)
IDENTITIES = TopicSpec(
    "identities.v1", EVENT_PARTITIONS, key="customer_id", value="identity_event",
    doc="Identity graph events: observed, linked, merged, unmerged, link_rejected.",
)
CONTACTS_RESOLVED = TopicSpec(
    "contacts.resolved.v1", EVENT_PARTITIONS, key="customer_id", value="contact",
    doc="The same contacts with customer_id set; one customer, one partition.",
)
CONVERSATIONS = TopicSpec(
    "conversations.v1", EVENT_PARTITIONS, key="customer_id", value="conversation_event",
    doc="Conversation lifecycle and SLA clock events.",
)
STREAMS_DLQ = TopicSpec(
    "streams.dlq.v1", 1, key="source topic", value="raw record; reason, topic, partition, offset in headers",
    retention_ms=THIRTY_DAYS_MS, doc="Records a stream processor could not decode or process.",
)
PROJECTIONS_DLQ = TopicSpec(
    "projections.dlq.v1", 1, key="source topic", value="raw record; reason, topic, partition, offset in headers",
    retention_ms=THIRTY_DAYS_MS, doc="Records a projector could not decode.",
)
CUSTOMER_PROFILES = TopicSpec(
    "customers.profiles.v1", EVENT_PARTITIONS, key="customer_id", value="latest customer profile snapshot",
    cleanup_policy="compact", retention_ms=INFINITE, doc="Compacted snapshot of each customer's profile.",
)

CATALOG: tuple[TopicSpec, ...] = (
    CONTACTS, INGEST_DLQ, IDENTITIES, CONTACTS_RESOLVED, CONVERSATIONS,
    STREAMS_DLQ, PROJECTIONS_DLQ, CUSTOMER_PROFILES,
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(name)


def drift(spec: TopicSpec, partitions: int, replication: int, configs: dict[str, str],
          want_replication: int) -> list[str]:
    """How an existing topic differs from its declaration (pure; empty = in line)."""
    found = []
    if partitions != spec.partitions:
        found.append(f"{spec.name}: {partitions} partitions, catalog says {spec.partitions}")
    if replication != want_replication:
        found.append(f"{spec.name}: replication factor {replication}, settings say {want_replication}")
    for key, want in spec.configs().items():
        have = configs.get(key)
        if have != want:
            found.append(f"{spec.name}: {key}={have}, catalog says {want}")
    return found
