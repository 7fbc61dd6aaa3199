"""The faust application of the stream processors, and the stages it runs.

``make_app`` is the App (broker, store, guarantees, producer batching); ``create_app`` adds the
topology (``streams.topology``: topics, tables and changelogs) and the stages, each in its own
module: ``streams.route_runner`` (contacts.v1 → the graph topic, DLQ for what does not decode),
``streams.identity_stage`` (the graph's single writer → contacts.resolved.v1, identities.v1; run
by ``streams.identity_runner``), both on aiokafka's batch API (``streams.batch_runner``), not as faust
agents,
``streams.conversations_stage`` (stitching and SLA clocks per customer → conversations.v1, clocks
scheduled by the pure ``streams.clocks``). Every stage takes its records in batches
(``streams.stage``). ``streams.worker`` runs the app as a process (probes, lag metric, bounded stop).

* Processing is at-least-once (faust's exactly-once mode has open bugs). Every output is the
  same for a redelivered input: event ids are deterministic, a duplicate changes no state, and
  the events a contact produced are re-sent from the state's outbox (so a crash after the
  changelog write but before the offset commit loses nothing and adds nothing new).
* Tables live in RocksDB (rocksdict) when it is importable, in memory otherwise
  (``THREADLINE_STREAMS_STORE=memory|rocksdb`` forces one), the identity stage's too
  (``identity_store_dir``); changelogs are the catalog's topics, with the partition counts of
  their sources.
"""

from __future__ import annotations

import time
from pathlib import Path

import faust

from schemas.codec import Codec, make_codec
from schemas.keystore import dlq_sealer
from streams.clocks import ClockScheduler
from streams.conversations import Stitcher
from streams.conversations_stage import ConversationsStage
from streams.identity_runner import IdentityRunner
from streams.identity_stage import unlink_command as _unlink_command
from streams.route_runner import RouteRunner
from streams.batch_runner import BatchRunner
from streams.rules import Rules, rules_from_settings
from streams.stage import StageContext
from streams.topology import StreamTopics, build_topology
from streams.worker import add_lag_metric
from streams.worker import run_runners as _run_runners
from streams.worker import run_worker as _run_worker
from threadline import catalog
from threadline.async_producer import keyed_partitioner
from threadline.kafka import broker_credentials
from threadline.settings import Settings

APP_ID = "threadline-streams"
STAGES = ("route", "identity", "conversations")
FAUST_STAGES = ("conversations",)  # the stages that are faust agents (the others: ``runners``)
CLOCK_INTERVAL = 1.0  # seconds between two looks at the clocks that fell due

__all__ = [
    "APP_ID",
    "STAGES",
    "StreamTopics",
    "make_app",
    "create_app",
    "run_worker",
    "unlink_command",
    "faust_broker",
    "store_url",
]


def faust_broker(settings: Settings) -> str:
    """faust's broker URL; its security (SASL, TLS, mTLS) goes in ``broker_credentials``
    (``threadline.kafka.broker_credentials``: the same settings as every kafka-python client)."""
    settings.kafka.check()
    return ";".join(f"kafka://{b}" for b in settings.kafka.bootstrap.split(","))


def store_url(settings: Settings) -> str:
    want = settings.streams.store
    if want == "memory":
        return "memory://"
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        if want == "rocksdb":
            raise
        return "memory://"
    return "rocksdb://"


def app_datadir(settings: Settings, app_id: str = APP_ID) -> Path:
    """The worker's data dir: faust's tables under ``v1/tables``, the identity stage's under
    ``identity`` (``identity_store_dir``)."""
    return settings.state_dir / "faust" / app_id


def identity_store_dir(settings: Settings, app_id: str = APP_ID) -> Path | None:
    """Where the identity stage's tables keep their RocksDB databases; None when tables are in
    memory (``store_url``)."""
    return app_datadir(settings, app_id) / "identity" if store_url(settings) == "rocksdb://" else None


def make_app(settings: Settings, app_id: str = APP_ID) -> faust.App:
    datadir = app_datadir(settings, app_id)
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=faust_broker(settings),
        broker_credentials=broker_credentials(settings),
        store=store_url(settings),
        processing_guarantee="at_least_once",
        topic_partitions=catalog.EVENT_PARTITIONS,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        table_standby_replicas=0,
        # Outputs and changelog writes go in few, large produce requests: each request costs the
        # worker a socket write that the profile showed as its largest single cost.
        producer_linger_ms=20,
        producer_max_batch_size=256 * 1024,
        producer_partitioner=keyed_partitioner,  # murmur2 as aiokafka, each key hashed once
        # How soon the group gives a dead worker's partitions to the others (THREADLINE_STREAMS_SESSION_TIMEOUT).
        broker_session_timeout=settings.streams.session_timeout,
    )


def create_app(
    settings: Settings,
    app_id: str = APP_ID,
    topics: StreamTopics | None = None,
    rules: Rules | None = None,
    stages: tuple[str, ...] = STAGES,
) -> faust.App:
    """The App with its topology and the ``stages`` this worker runs (all three by default)."""
    rules = rules or rules_from_settings(settings.streams)
    app = make_app(settings, app_id)
    topo = build_topology(app, topics or StreamTopics(), stages)
    codec = make_codec(settings)
    ctx = StageContext(app, app_id, topo.names.dlq, seal=dlq_sealer(settings))
    # route and identity are no faust agents: services of the app, each with its own consumer group
    app.runners = runners(settings, app_id, topo.names, ctx, codec, rules, stages)  # type: ignore[attr-defined]
    for runner in app.runners:  # type: ignore[attr-defined]
        app.service(runner)
    if "conversations" in stages:
        scheduler = ClockScheduler(
            lateness_ms=rules.stitch.timer_grace_seconds * 1000,
            idle_seconds=rules.stitch.idle_seconds,
            hold_seconds=rules.stitch.idle_hold_seconds,
        )
        stage = ConversationsStage(ctx, codec, topo, Stitcher(rules.stitch), scheduler)
        app.agent(topo.stitch_in, name=f"{app_id}.conversations")(stage.agent)

        @app.timer(interval=CLOCK_INTERVAL)
        async def clocks() -> None:
            """Customers whose clocks fell due on the partitions this worker owns, advanced in the stage."""
            await stage.on_timer(
                lambda: {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topo.names.resolved}
            )

    add_lag_metric(app)
    return app


def unlink_command(a: str, b: str, *, command_id: str, at_ms: int | None = None) -> bytes:
    """The record ``threadline identity unlink`` writes to the graph topic (header kind=unlink)."""
    return _unlink_command(a, b, command_id=command_id, at_ms=at_ms or int(time.time() * 1000))


def runners(
    settings: Settings,
    app_id: str,
    names: StreamTopics,
    ctx: StageContext,
    codec: Codec,
    rules: Rules,
    stages: tuple[str, ...] = STAGES,
) -> list[BatchRunner]:
    """The runners of the ``stages`` this worker runs that are not faust agents: route, identity;
    ``codec``: the worker's one codec (its registry client and schema plans), shared by its stages."""
    out: list[BatchRunner] = []
    if "route" in stages:
        out.append(RouteRunner(settings, app_id, names.contacts, names.graph, ctx, codec))
    if "identity" in stages:
        store_dir = identity_store_dir(settings, app_id)
        out.append(IdentityRunner(settings, app_id, names, ctx, codec, rules.identity, store_dir=store_dir))
    return out


def run_worker(
    settings: Settings, app_id: str = APP_ID, topics: StreamTopics | None = None, stages: tuple[str, ...] = STAGES
) -> None:
    if not set(stages) & set(FAUST_STAGES):  # faust would have nothing to consume: the runners alone
        names = topics or StreamTopics()
        ctx = StageContext(None, app_id, names.dlq, seal=dlq_sealer(settings))  # type: ignore[arg-type]
        rules = rules_from_settings(settings.streams)
        _run_runners(runners(settings, app_id, names, ctx, make_codec(settings), rules, stages), settings)
        return
    _run_worker(create_app(settings, app_id=app_id, topics=topics, stages=stages), settings)
