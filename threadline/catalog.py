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
    "contacts.v1",
    EVENT_PARTITIONS,
    key="primary channel identity (kind:value)",
    value="contact",
    doc="System of record: every contact from every channel. Infinite retention, never compacted.",
)
INGEST_DLQ = TopicSpec(
    "ingest.dlq.v1",
    1,
    key="connector",
    value="raw provider payload; reason and connector in headers",
    retention_ms=THIRTY_DAYS_MS,
    doc="What a connector could not map, with the raw payload and the reason.",
)
IDENTITIES = TopicSpec(
    "identities.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="identity_event",
    doc="Identity graph events: observed, linked, merged, unmerged, link_rejected.",
)
CONTACTS_RESOLVED = TopicSpec(
    "contacts.resolved.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="contact",
    doc="The same contacts with customer_id set; one customer, one partition.",
)
CONVERSATIONS = TopicSpec(
    "conversations.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="conversation_event",
    doc="Conversation lifecycle and SLA clock events.",
)
STREAMS_DLQ = TopicSpec(
    "streams.dlq.v1",
    1,
    key="source topic",
    value="raw record; reason, topic, partition, offset in headers",
    retention_ms=THIRTY_DAYS_MS,
    doc="Records a stream processor could not decode or process.",
)
# Internal topics of the stream processors (``threadline worker``): the identity graph is one
# keyed state with a single writer, so its input and changelogs have one partition; the
# conversation state is keyed by customer_id, so its commands and changelog match contacts.resolved.v1.
SEVEN_DAYS_MS = str(7 * 24 * 3600 * 1000)
IDENTITY_GRAPH = TopicSpec(
    "streams.identity-graph.v1",
    1,
    key="contacts.v1 key",
    value="contacts.v1 record bytes, or an unlink command (JSON)",
    retention_ms=SEVEN_DAYS_MS,
    doc="Every contact and unlink command, to the one writer of the identity graph.",
)
IDENTITY_GRAPH_CHANGELOG = TopicSpec(
    "streams.identity-graph.changelog.v1",
    1,
    key="graph node or evidence key",
    value="JSON",
    cleanup_policy="compact",
    doc="Changelog of the identity graph table (partitions as its source).",
)
IDENTITY_CONTACTS_CHANGELOG = TopicSpec(
    "streams.identity-contacts.changelog.v1",
    1,
    key="event_id",
    value="JSON: base64 of the contacts.v1 record",
    cleanup_policy="compact",
    doc="Changelog of the contacts the graph re-keys after a merge or unmerge.",
)
CONVERSATION_COMMANDS = TopicSpec(
    "streams.conversation-commands.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="JSON: tick | retire",
    retention_ms=SEVEN_DAYS_MS,
    doc="Timer ticks and merge retirements for the conversation state.",
)
CONVERSATIONS_CHANGELOG = TopicSpec(
    "streams.conversations.changelog.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="JSON",
    cleanup_policy="compact",
    doc="Changelog of the per-customer conversation table (partitions as its source).",
)
PROJECTIONS_DLQ = TopicSpec(
    "projections.dlq.v1",
    1,
    key="source topic",
    value="raw record; reason, topic, partition, offset in headers",
    retention_ms=THIRTY_DAYS_MS,
    doc="Records a projector could not decode.",
)
# Downstream services that prefer Kafka to HTTP: the read API's customer card, one record per
# customer (projectors/profiles.py). Compacted: the latest profile per customer_id stays; a customer
# merged into another one is a tombstone, kept at least a week (delete.retention.ms) so a consumer
# that was away that long still sees it before compaction removes the key.
CUSTOMER_PROFILES = TopicSpec(
    "customer-profiles.v1",
    EVENT_PARTITIONS,
    key="customer_id",
    value="customer_profile",
    cleanup_policy="compact",
    retention_ms=INFINITE,
    extra_configs={"delete.retention.ms": SEVEN_DAYS_MS},
    doc="Compacted: each customer's profile as the read API shows it; a tombstone when merged away.",
)

# Erasures (docs/privacy.md): one event per erased customer, ids and counts only, kept forever.
PRIVACY_ERASURES = TopicSpec(
    "privacy.erasures.v1",
    1,
    key="erasure event id",
    value="erasure",
    doc="One event per erased customer: when, which customer ids, how many keys; no personal data.",
)

CATALOG: tuple[TopicSpec, ...] = (
    CONTACTS,
    INGEST_DLQ,
    IDENTITIES,
    CONTACTS_RESOLVED,
    CONVERSATIONS,
    STREAMS_DLQ,
    PROJECTIONS_DLQ,
    CUSTOMER_PROFILES,
    IDENTITY_GRAPH,
    IDENTITY_GRAPH_CHANGELOG,
    IDENTITY_CONTACTS_CHANGELOG,
    CONVERSATION_COMMANDS,
    CONVERSATIONS_CHANGELOG,
    PRIVACY_ERASURES,
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(name)


def drift(
    spec: TopicSpec, partitions: int, replication: int, configs: dict[str, str], want_replication: int
) -> list[str]:
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
