"""threadline.groups.summarize (consumer group lag) and the topic plan of threadline.topics."""

from __future__ import annotations

from threadline.catalog import CATALOG, CONTACTS, CUSTOMER_PROFILES
from threadline.groups import GroupLag, TopicLag, summarize
from threadline.topics import plan, prefixed


def test_lag_is_end_minus_committed_summed_per_topic():
    g = summarize(
        "threadline-streams",
        "Stable",
        2,
        committed={("contacts.v1", 0): 10, ("contacts.v1", 1): 5, ("streams.identity-graph.v1", 0): 7},
        ends={("contacts.v1", 0): 12, ("contacts.v1", 1): 9, ("streams.identity-graph.v1", 0): 7},
    )
    assert g.topics == (TopicLag("contacts.v1", 2, 15, 21, 6), TopicLag("streams.identity-graph.v1", 1, 7, 7, 0))
    assert g.lag == 6
    assert g.line() == "lag 6, Stable, 2 members, 2 topics"


def test_partitions_without_a_commit_or_without_a_topic_are_left_out():
    g = summarize(
        "g", "Empty", 0, committed={("t", 0): -1, ("t", 1): 3, ("gone", 0): 5}, ends={("t", 0): 4, ("t", 1): 4}
    )
    assert g.topics == (TopicLag("t", 1, 3, 4, 1),)
    assert g.line() == "lag 1, Empty, 0 members, 1 topic"


def test_a_commit_past_the_end_is_no_lag_rather_than_negative():
    g = summarize("g", "Empty", 0, committed={("t", 0): 50}, ends={("t", 0): 20})
    assert g.lag == 0 and g.topics[0].committed == 50


def test_a_group_without_commits_has_no_topics_and_says_so():
    g = summarize("demo", "Empty", 0, committed={}, ends={})
    assert g == GroupLag("demo", "Empty", 0, ())
    assert g.line() == "lag 0, Empty, 0 members, no commits"
    assert g.as_dict() == {"group": "demo", "state": "Empty", "members": 0, "topics": [], "lag": 0}


def test_as_dict_is_json_ready_with_the_total():
    d = summarize("g", "Stable", 1, {("t", 0): 1}, {("t", 0): 3}).as_dict()
    assert d["lag"] == 2 and d["topics"] == [{"topic": "t", "partitions": 1, "committed": 1, "end": 3, "lag": 2}]


def test_the_plan_shows_exactly_what_apply_creates():
    p = plan(CONTACTS, replication=3)
    assert (p.name, p.partitions, p.replication) == ("contacts.v1", 6, 3)
    assert p.describe() == "partitions=6 replication=3 cleanup.policy=delete retention.bytes=-1 retention.ms=-1"
    assert plan(CUSTOMER_PROFILES, 1).describe() == (
        "partitions=6 replication=1 cleanup.policy=compact delete.retention.ms=604800000 retention.ms=-1"
    )


def test_prefixed_catalog_keeps_every_setting_under_new_names():
    specs = prefixed(CATALOG, "tenant-b")
    assert [s.name for s in specs] == [f"tenant-b.{s.name}" for s in CATALOG]
    assert [s.configs() for s in specs] == [s.configs() for s in CATALOG]
    assert prefixed(CATALOG, "") is CATALOG


def test_describing_a_faust_group_does_not_dump_its_members_into_the_log(caplog):
    import logging

    import threadline.topics  # noqa: F401  (installs the filter)

    groups_log = logging.getLogger("kafka.admin._groups")
    with caplog.at_level(logging.WARNING, logger="kafka.admin._groups"):
        groups_log.warning("Unable to decode member_metadata for DescribedGroup(...)/faust-0.15.3-abc")
        groups_log.warning("Unable to decode member_assignment for DescribedGroup(...)/faust-0.15.3-abc")
        groups_log.warning("coordinator not available")
    assert [r.getMessage() for r in caplog.records] == ["coordinator not available"]


def test_status_lists_groups_with_members_or_commits_and_counts_the_empty_ones():
    from threadline.groups import summarize
    from threadline.tools.stack import group_rows

    lags = [
        summarize("threadline-streams", "Stable", 2, {("contacts.v1", 0): 5}, {("contacts.v1", 0): 9}),
        summarize("idle-reader", "Empty", 0, {("contacts.v1", 0): 9}, {("contacts.v1", 0): 9}),
        summarize("left-behind-1", "Empty", 0, {}, {}),
        summarize("left-behind-2", "Empty", 0, {}, {}),
    ]
    rows = group_rows(lags)
    assert [r.name for r in rows] == ["group threadline-streams", "group idle-reader", "groups"]
    assert rows[0].running and rows[0].detail.startswith("lag 4, Stable, 2 members")
    assert rows[-1].detail == "2 empty groups without commits not shown (threadline groups)"
