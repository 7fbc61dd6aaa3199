"""The stream app's topology: the topics it reads and writes, and its tables with their changelogs.

    contacts.v1 (6) ──route──► streams.identity-graph.v1 (1) ──identity──► identities.v1
         │ undecodable ─► streams.dlq.v1                   changelogs: identity-graph, ├─► contacts.resolved.v1 (6)
                                                           identity-contacts           └─► commands: moved
    contacts.resolved.v1 (6) + streams.conversation-commands.v1 (6) ──conversations──► conversations.v1
                               ▲ clocks: due customers advanced in the stage itself       table: conversations

A table's changelog has the partitions of its source topic (faust raises PartitionsMismatch
otherwise); the topics are the catalog's (``threadline topics apply`` creates them), the app
never declares them. The route and identity stages are not faust agents: their runners
(``streams.route_runner``, ``streams.identity_runner``) read contacts.v1 and the graph topic,
and the identity runner writes its two changelogs itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import faust

from threadline import catalog


@dataclass(frozen=True)
class StreamTopics:
    """The names the app reads and writes; the catalog's by default, unique ones in tests."""

    contacts: str = catalog.CONTACTS.name
    resolved: str = catalog.CONTACTS_RESOLVED.name
    identities: str = catalog.IDENTITIES.name
    conversations: str = catalog.CONVERSATIONS.name
    dlq: str = catalog.STREAMS_DLQ.name
    graph: str = catalog.IDENTITY_GRAPH.name
    graph_changelog: str = catalog.IDENTITY_GRAPH_CHANGELOG.name
    contacts_changelog: str = catalog.IDENTITY_CONTACTS_CHANGELOG.name
    commands: str = catalog.CONVERSATION_COMMANDS.name
    conversations_changelog: str = catalog.CONVERSATIONS_CHANGELOG.name

    @classmethod
    def prefixed(cls, prefix: str) -> StreamTopics:
        """Every topic under ``prefix`` (tests: topics nobody else writes)."""
        base = cls()
        return replace(base, **{k: f"{prefix}.{v}" for k, v in base.__dict__.items()})

    def specs(self, partitions: int = catalog.EVENT_PARTITIONS) -> dict[str, tuple[int, dict[str, str]]]:
        """Each topic's partitions and configs as the catalog declares them (for tests to create)."""
        sizes = {
            k: 1 if k in ("dlq", "graph", "graph_changelog", "contacts_changelog") else partitions
            for k in self.__dict__
        }
        compact = ("graph_changelog", "contacts_changelog", "conversations_changelog")
        return {
            v: (sizes[k], {"cleanup.policy": "compact" if k in compact else "delete"}) for k, v in self.__dict__.items()
        }


def raw_topic(app: faust.App, *names: str, partitions: int | None = None) -> faust.TopicT:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=partitions
    )


@dataclass(frozen=True)
class Topology:
    """The app's channels and tables."""

    names: StreamTopics
    stitch_in: faust.TopicT  # contacts.resolved.v1 + commands: the conversations stage's input
    conv_table: faust.Table | None  # customer id -> conversation state


def build_topology(
    app: faust.App, names: StreamTopics, stages: tuple[str, ...] = ("route", "identity", "conversations")
) -> Topology:
    """The channels, and the tables of the ``stages`` this worker runs (a worker that runs no
    conversations stage declares, recovers and holds no conversation state)."""
    json_schema = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")

    def table(name: str, changelog: str, partitions: int) -> faust.Table:
        return app.Table(
            name,
            partitions=partitions,
            schema=json_schema,
            changelog_topic=app.topic(changelog, partitions=partitions, compacting=True, schema=json_schema),
        )

    return Topology(
        names=names,
        stitch_in=raw_topic(app, names.resolved, names.commands),
        conv_table=(
            table("conversations", names.conversations_changelog, catalog.EVENT_PARTITIONS)
            if "conversations" in stages
            else None
        ),
    )
