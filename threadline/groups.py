"""Consumer groups on the cluster and how far behind each one is.

For every group (the worker's faust group ``threadline-streams``, any other; the
projectors use none): its state, its member count, and per topic the committed offsets against the end offsets,
summed over the partitions the group has committed. Lag = end offset − committed offset.

``summarize`` is the pure part; ``group_lags`` asks the cluster (kafka-python's admin client:
list_groups, describe_groups, list_group_offsets, list_partition_offsets). The projectors keep
their offsets in PostgreSQL, not in a group: their lag is ``projectors.lag``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from threadline.settings import Settings


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: int  # partitions the group has committed an offset for
    committed: int  # sum of the committed offsets
    end: int  # sum of the end offsets of those partitions
    lag: int  # records written and not yet consumed (committed) by the group


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: int
    topics: tuple[TopicLag, ...]

    @property
    def lag(self) -> int:
        return sum(t.lag for t in self.topics)

    def as_dict(self) -> dict:
        return {**asdict(self), "topics": [asdict(t) for t in self.topics], "lag": self.lag}

    def line(self) -> str:
        """One line for ``threadline status`` (``threadline groups`` has the topics)."""
        topics = f"{len(self.topics)} topic{'s' if len(self.topics) != 1 else ''}" if self.topics else "no commits"
        return f"lag {self.lag:,}, {self.state}, {self.members} member{'s' if self.members != 1 else ''}, {topics}"


def summarize(
    group: str, state: str, members: int, committed: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]
) -> GroupLag:
    """Lag of one group from its committed offsets and the end offsets, both keyed by
    (topic, partition). A partition without a committed offset (negative) or whose topic is
    gone (no end offset) is left out; a committed offset past the end (a truncated or recreated
    topic) counts as no lag, never as negative lag."""
    per_topic: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (topic, partition), offset in committed.items():
        end = ends.get((topic, partition))
        if offset is None or offset < 0 or end is None:
            continue
        per_topic[topic].append((offset, end))
    topics = tuple(
        TopicLag(
            topic, len(pairs), sum(c for c, _ in pairs), sum(e for _, e in pairs), sum(max(e - c, 0) for c, e in pairs)
        )
        for topic, pairs in sorted(per_topic.items())
    )
    return GroupLag(group, state, members, topics)


def group_lags(settings: Settings, groups: list[str] | None = None, admin=None) -> list[GroupLag]:
    """Every consumer group on the cluster (or the ones named), largest lag first."""
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    from threadline.topics import admin_client

    own = admin is None
    admin = admin or admin_client(settings)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        ids = sorted(listed if groups is None else [g for g in groups if g in listed])
        if not ids:
            return []
        described = admin.describe_groups(ids)
        offsets = admin.list_group_offsets(ids)
        existing = set(admin.list_topics())
        tps = {tp for by_tp in offsets.values() for tp in by_tp if tp.topic in existing}
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}) if tps else {}
        end_by_key = {(tp.topic, tp.partition): o.offset for tp, o in ends.items()}
        out = []
        for gid in ids:
            info = described.get(gid) or {}
            state = info.get("group_state") or listed[gid].get("group_state") or "unknown"
            committed = {
                (tp.topic, tp.partition): om.offset
                for tp, om in offsets.get(gid, {}).items()
                if isinstance(tp, TopicPartition)
            }
            out.append(summarize(gid, state, len(info.get("members") or []), committed, end_by_key))
        return sorted(out, key=lambda g: (-g.lag, g.group))
    finally:
        if own:
            admin.close()
