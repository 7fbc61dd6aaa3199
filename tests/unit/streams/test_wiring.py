"""streams/app.py wiring, without a broker: topic names from the catalog, changelogs sized like
their sources (faust raises PartitionsMismatch otherwise), the store choice."""

from __future__ import annotations

import pytest

from streams.app import StreamTopics, create_app, store_url
from threadline.settings import Settings
from threadline import catalog
from threadline.settings import CodecKind


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT), app_id="wiring-test")


def test_the_default_topics_are_the_catalogs():
    names = {spec.name: spec for spec in catalog.CATALOG}
    for name, (partitions, configs) in StreamTopics().specs().items():
        assert names[name].partitions == partitions
        assert names[name].cleanup_policy == configs["cleanup.policy"]


def test_every_table_changelog_has_the_partitions_of_its_source(app):
    topics = StreamTopics()
    source = {"conversations": catalog.CONTACTS_RESOLVED}
    changelog = {"conversations": topics.conversations_changelog}
    assert set(app.tables) == set(source)
    for name, table in app.tables.items():
        assert table.changelog_topic.get_topic_name() == changelog[name]
        assert table.partitions == source[name].partitions == catalog.by_name(changelog[name]).partitions


@pytest.mark.parametrize(
    "stages, tables",
    [
        (("identity",), set()),
        (("route", "conversations"), {"conversations"}),
        (("route", "identity", "conversations"), {"conversations"}),
    ],
)
def test_a_worker_declares_only_the_tables_of_the_stages_it_runs(tmp_path, stages, tables):
    """The route and identity stages are no faust agents and have no faust table: their runners,
    services of the app, read contacts.v1 and the graph topic, each in a consumer group of its own
    (streams.batch_runner), and the identity runner keeps its tables (streams.identity_runner)."""
    from streams.identity_runner import IdentityRunner
    from streams.route_runner import RouteRunner

    app = create_app(Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT), app_id="wiring-stages", stages=stages)
    assert set(app.tables) == tables
    assert {a.split(".")[-1] for a in app.agents} == set(stages) - {"identity", "route"}
    kinds = {"route": RouteRunner, "identity": IdentityRunner}
    assert [type(r) for r in app.runners] == [kinds[s] for s in stages if s in kinds]
    for runner in app.runners:
        assert runner in app._extra_services
        assert runner.group == f"wiring-stages-{runner.stage}"
    codecs = {id(r.codec if isinstance(r, RouteRunner) else r.stage_rules.codec) for r in app.runners}
    codecs |= {id(agent.fun.__self__.codec) for agent in app.agents.values()}  # the conversations stage's
    assert len(codecs) == 1  # one codec (registry client, schema plans) for the worker's stages
    faust_reads = {t for agent in app.agents.values() for t in agent.channel.topics}
    assert faust_reads == ({"contacts.resolved.v1", "streams.conversation-commands.v1"} if tables else set())


def test_prefixed_topics_keep_their_shape_under_a_prefix():
    prefixed = StreamTopics.prefixed("t1")
    assert prefixed.contacts == "t1.contacts.v1"
    assert list(prefixed.specs().values()) == list(StreamTopics().specs().values())


@pytest.mark.parametrize("env, want", [("memory", "memory://"), ("rocksdb", "rocksdb://"), ("", "rocksdb://")])
def test_tables_use_rocksdb_when_rocksdict_is_there_unless_told_otherwise(monkeypatch, env, want):
    pytest.importorskip("rocksdict")
    monkeypatch.setenv("THREADLINE_STREAMS_STORE", env)
    assert store_url(Settings()) == want


class _JoinedConsumer:
    """An aiokafka consumer as the identity runner's readiness reads it: its group generation."""

    def __init__(self, generation: int):
        self._coordinator = type("Coordinator", (), {"generation": generation})()


class _RunningLoop:
    def is_running(self) -> bool:
        return True


def test_the_worker_is_not_ready_until_its_own_consumer_has_joined_the_group(app):
    from streams.worker import streams_running

    probe = streams_running(app, _RunningLoop())
    with pytest.raises(RuntimeError, match="has not joined group wiring-test"):
        probe()
    app.consumer_generation_id = 3  # what faust's aiokafka driver sets when the group assigns partitions
    with pytest.raises(RuntimeError, match="route stage is starting"):
        probe()
    route, identity = app.runners
    route.consumer = _JoinedConsumer(1)
    with pytest.raises(RuntimeError, match="identity stage is starting"):
        probe()
    identity.consumer = _JoinedConsumer(-1)
    with pytest.raises(RuntimeError, match="has not joined group wiring-test-identity"):
        probe()
    identity.consumer = _JoinedConsumer(1)
    assert probe() is None
    app.rebalancing = True
    with pytest.raises(RuntimeError, match="rebalancing"):
        probe()


def test_table_writes_of_a_batch_are_the_bytes_faust_itself_writes_and_reads(app):
    """streams.stage.write_table serializes keys and values once, for the store and the changelog:
    they must be what the tables' own serializers give and read back (faust's recovery reads them)."""
    import orjson

    table = app.tables["conversations"]
    key, value = (
        "cust-1",
        {
            "customer_id": "cust-1",
            "wm": 1_795_000_000_000,
            "contacts": [["e", 1, 2.5, None]],
            "pub": {"c": {"st": "open"}},
            "p": 3,
        },
    )
    kb, vb = orjson.dumps(key), orjson.dumps(value)
    assert kb == app.serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
    assert app.serializers.loads_value(table.value_type, vb, serializer=table.value_serializer) == value
    assert app.serializers.loads_key(table.key_type, kb, serializer=table.key_serializer) == key


class _CountingDB:
    def __init__(self, db, partition: int, reads: list):
        self.db, self.partition, self.reads = db, partition, reads

    def get(self, key):
        self.reads.append((self.partition, key))
        return self.db.get(key)

    def __getattr__(self, name):
        return getattr(self.db, name)


def _counting_reads(store) -> list:
    """Every read of a key in one of ``store``'s partition databases, as (partition, key); any
    other way of reading (faust's ``_get``, ``_contains``: with no record being processed, every
    partition's database) fails."""
    reads: list = []
    real = store._db_for_partition

    def no_read(*_a):
        raise AssertionError("a read through faust's store methods")

    store._get = store._contains = no_read
    store._db_for_partition = lambda p: _CountingDB(real(p), p, reads)
    return reads


def test_a_batch_of_table_writes_is_one_rocksdb_write_batch_that_faust_reads_back(tmp_path):
    """write_table on the RocksDB store: one write batch for the partition (not a put per key),
    the keys indexed to that partition, and faust's own reads give the values back."""
    pytest.importorskip("rocksdict")
    from streams.stage import Outputs, read_table, write_table, writing_for

    app = create_app(Settings(home=tmp_path, codec=CodecKind.SINGLE_OBJECT), app_id="batch-write-test")
    table = app.tables["conversations"]
    store = table.data

    def no_put(*_a):
        raise AssertionError("a put per key")

    store._set = no_put
    items = {f"cust-{i}": {"customer_id": f"cust-{i}", "p": 3, "n": i} for i in range(5)}
    out = Outputs()
    write_table(out, table, items, StreamTopics().resolved, 3)
    assert [(p, kb) for _t, p, kb, _vb in out.changelog] == [(3, f'"cust-{i}"'.encode()) for i in range(5)]
    with writing_for(StreamTopics().resolved, 3):
        assert {k: store[k] for k in items} == items
    assert {store._key_index[f'"cust-{i}"'.encode()] for i in range(5)} == {3}
    # read_table: one read in the partition's database, what write_table wrote, None when absent
    reads = _counting_reads(store)
    assert read_table(table, "cust-2", StreamTopics().resolved, 3) == items["cust-2"]
    assert read_table(table, "nobody", StreamTopics().resolved, 3) is None
    assert reads == [(3, b'"cust-2"'), (3, b'"nobody"')]
