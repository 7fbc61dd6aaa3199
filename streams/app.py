"""The faust application: wires the identity and conversation rules to topics and tables.

    contacts.v1 (6) ──route──► streams.identity-graph.v1 (1) ──identity──► identities.v1
         │ undecodable ─► streams.dlq.v1                        table: identity graph ├─► contacts.resolved.v1 (6)
                                                                                      └─► commands: moved
    contacts.resolved.v1 (6) + streams.conversation-commands.v1 (6) ──conversations──► conversations.v1
                               ▲ timer: tick when a partition's watermark passes a deadline   table: state per customer_id

* ``route`` runs on every worker over the six contacts.v1 partitions: it decodes (an undecodable
  record goes to streams.dlq.v1 with its reason and the partition moves on) and forwards the
  contact to the one-partition graph topic. ``identity`` is the graph's single writer (the
  worker that owns that partition; see ``streams.identity`` for why). ``conversations`` is keyed
  by customer_id: each customer's state has one writer, the owner of its partition.
* Conversations are a function of each customer's contacts in event time (``streams.conversations``).
  A contact re-keyed by identity (merge, unmerge) goes to its new customer with the graph position
  (header ``gen``), and its old customer gets a ``moved`` command at the same position, so both
  are recomputed from their new sets of contacts whatever the order the two records arrive in.
* Each partition has a watermark: the latest event time seen on it, less the allowed lateness;
  while the partition is idle it follows the wall clock. The timer runs on every worker, looks
  only at the customers of the partitions it owns, and sends a ``tick`` command (with the
  watermark) to each customer whose next deadline the watermark passed; the tick goes through the
  commands topic so that the state change happens in the agent, in order, with its changelog.
* Processing is at-least-once (faust's exactly-once mode has open bugs). Every output is the
  same for a redelivered input: event ids are deterministic, a duplicate changes no state, and
  the events a contact produced are re-sent from the state's outbox (so a crash after the
  changelog write but before the offset commit loses nothing and adds nothing new).
* Tables live in RocksDB (rocksdict) when it is importable, in memory otherwise
  (``THREADLINE_STREAMS_STORE=memory|rocksdb`` forces one); changelogs are the catalog's topics,
  with the partition counts of their sources.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace

import faust

import schemas
from schemas.codec import make_codec
from streams.conversations import Stitcher
from threadline.dlq import dlq_headers
from streams.identity import IdentityGraph, resolve, to_millis
from streams.rules import Rules, rules_from_env
from threadline import catalog, metrics, ops
from threadline.errors import FatalError
from threadline.kafka import broker_credentials, header_list
from threadline.logging import get_logger
from threadline.settings import Settings

log = get_logger("threadline.streams")

APP_ID = "threadline-streams"
# A record that fails to decode or that the rules cannot process goes to the DLQ with the reason:
# whatever the failure of that one record, the partition moves on and the worker keeps running.
DECODE_ERRORS = (FatalError, ValueError, KeyError, TypeError, AttributeError, IndexError)
SHUTDOWN_LIMIT = 25.0  # seconds a worker may take to stop after SIGTERM before it exits hard
COMPONENT = "worker"  # the ``component`` label of the worker's metrics
LAG_INTERVAL = 5.0  # seconds between updates of threadline_consumer_lag
LOOP_ANSWER_LIMIT = 5.0  # seconds the event loop may take to answer /livez


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
        sizes = {k: 1 if k in ("dlq", "graph", "graph_changelog", "contacts_changelog") else partitions
                 for k in self.__dict__}
        compact = ("graph_changelog", "contacts_changelog", "conversations_changelog")
        return {v: (sizes[k], {"cleanup.policy": "compact" if k in compact else "delete"})
                for k, v in self.__dict__.items()}


def faust_broker(settings: Settings) -> str:
    """faust's broker URL; its security (SASL, TLS, mTLS) goes in ``broker_credentials``
    (``threadline.kafka.broker_credentials``: the same settings as every kafka-python client)."""
    settings.check_kafka_security()
    return ";".join(f"kafka://{b}" for b in settings.kafka_bootstrap.split(","))


def store_url() -> str:
    want = os.environ.get("THREADLINE_STREAMS_STORE", "").lower()
    if want == "memory":
        return "memory://"
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        if want == "rocksdb":
            raise
        return "memory://"
    return "rocksdb://"


def _raw_topic(app: faust.App, *names: str, partitions: int | None = None) -> faust.TopicT:
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=partitions)


def _now_ms() -> int:
    return int(time.time() * 1000)


def create_app(settings: Settings, app_id: str = APP_ID, topics: StreamTopics | None = None,
               rules: Rules | None = None) -> faust.App:
    topics = topics or StreamTopics()
    rules = rules or rules_from_env()
    datadir = settings.state_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=faust_broker(settings), broker_credentials=broker_credentials(settings),
        store=store_url(),
        processing_guarantee="at_least_once",
        topic_partitions=catalog.EVENT_PARTITIONS,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        table_standby_replicas=0,
        producer_linger_ms=5,  # outputs and changelog writes go in batches, not one request each
        producer_max_batch_size=64 * 1024,
        # How soon the group gives a dead worker's partitions to the others (THREADLINE_STREAMS_SESSION_TIMEOUT).
        broker_session_timeout=float(os.environ.get("THREADLINE_STREAMS_SESSION_TIMEOUT", "30")),
    )
    codec = make_codec(settings)
    stitcher = Stitcher(rules.stitch)

    contacts = _raw_topic(app, topics.contacts)
    graph_in = _raw_topic(app, topics.graph, partitions=1)
    stitch_in = _raw_topic(app, topics.resolved, topics.commands)

    json_schema = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")

    def table(name: str, changelog: str, partitions: int, schema: faust.Schema):
        return app.Table(name, partitions=partitions, schema=schema,
                         changelog_topic=app.topic(changelog, partitions=partitions, compacting=True, schema=schema))

    graph_table = table("identity-graph", topics.graph_changelog, 1, json_schema)
    contacts_table = table("identity-contacts", topics.contacts_changelog, 1, json_schema)  # base64 of the record
    conv_table = table("conversations", topics.conversations_changelog, catalog.EVENT_PARTITIONS, json_schema)
    graph = IdentityGraph(graph_table, rules.identity)
    consumed = metrics.Labelled(metrics.EVENTS_CONSUMED, COMPONENT)
    produced = metrics.Labelled(metrics.EVENTS_PRODUCED, COMPONENT)
    dead_lettered = metrics.Labelled(metrics.DLQ, COMPONENT)
    sla_events = metrics.Labelled(metrics.SLA)
    lag_gauge = metrics.LagGauge(COMPONENT)
    due_index: dict[str, tuple[int, int]] = {}  # customer_id -> (next due ms, partition)
    indexed_for: set = set()
    ticked: dict[str, int] = {}
    watermarks: dict[int, int] = {}  # partition -> watermark (ms, event time)
    idle_since: dict[int, float] = {}  # partition -> monotonic time of its last record
    lateness = rules.stitch.timer_grace_seconds * 1000

    async def emit(topic: str, key: bytes, value: bytes, headers: dict[str, str] | None = None) -> None:
        """Hand a record to the producer (faust flushes it before it commits the input's offset)."""
        await app.producer.send(topic, key, value, None, None, header_list(headers))
        produced(topic).inc()

    async def measured(events, stage: str):
        """The agent's events, counted per topic, each timed from its arrival in the agent's loop
        to the agent asking for the next one."""
        seconds = metrics.PROCESSING_SECONDS.labels(COMPONENT, stage)
        async for event in events:
            consumed(event.message.topic).inc()
            t0 = time.perf_counter()
            yield event
            seconds.observe(time.perf_counter() - t0)

    async def to_dlq(event, reason: str) -> None:
        msg = event.message
        dead_lettered(msg.topic).inc()
        await emit(topics.dlq, msg.topic.encode(), event.value,
                   dlq_headers(reason=reason[:1000], topic=msg.topic, partition=msg.partition, offset=msg.offset,
                               component=app_id))
        log.warning("record_to_dlq", topic=msg.topic, partition=msg.partition, offset=msg.offset,
                    reason=reason.split(":", 1)[0])

    @app.agent(contacts)
    async def route(stream):
        async for event in measured(stream.events(), "route"):
            try:
                record = codec.decode(event.value).record
                if not record.get("identities"):
                    raise ValueError("a contact without identities cannot be resolved")
            except DECODE_ERRORS as exc:
                await to_dlq(event, f"{type(exc).__name__}: {exc}")
                continue
            await emit(topics.graph, event.key, event.value, {"kind": "contact"})

    async def send_resolved(record: dict, customer_id: str, gen: int, rekeyed_from: str | None = None) -> None:
        out = resolve(record, customer_id)
        headers = {"event_id": out["event_id"], "gen": str(gen)}
        if rekeyed_from:
            headers["rekeyed_from"] = rekeyed_from
        await emit(topics.resolved, customer_id.encode(), codec.encode(topics.resolved, schemas.CONTACT, out), headers)

    async def publish(change, offset: int) -> None:
        """identities.v1 events; every contact whose customer changed goes again to
        contacts.resolved.v1 under its new customer, and its old customer gets one ``moved`` command
        (per new customer) naming the contacts that left, both at graph position ``offset``."""
        moved: dict[tuple[str, str], list[str]] = {}
        for eid, new, old in change.rekeyed:
            raw = contacts_table.get(eid)
            if raw is not None:
                await send_resolved(codec.decode(base64.b64decode(raw)).record, new, offset, rekeyed_from=old)
            moved.setdefault((old, new), []).append(eid)
        for (old, new), ids in sorted(moved.items()):
            await emit(topics.commands, old.encode(),
                       json.dumps({"type": "moved", "to": new, "event_ids": sorted(ids), "gen": offset}).encode())
        for e in change.events:
            await emit(topics.identities, e["customer_id"].encode(),
                       codec.encode(topics.identities, schemas.IDENTITY_EVENT, e), {"event_id": e["event_id"]})
            log.info("identity_" + e["event_type"], event_id=e["event_id"], customer_id=e["customer_id"],
                     offset=offset, rule=e["rule"], reason=e["reason"])

    @app.agent(graph_in)
    async def identity(stream):
        async for event in measured(stream.events(), "identity"):
            msg = event.message
            headers = dict(msg.headers or [])
            if headers.get("kind") == b"unlink":
                try:
                    cmd = json.loads(event.value)
                    change = graph.unlink(cmd["a"], cmd["b"], command_id=cmd["command_id"], at_ms=int(cmd["at_ms"]))
                except (ValueError, KeyError, TypeError) as exc:
                    await to_dlq(event, f"{type(exc).__name__}: {exc}")
                    continue
                await publish(change, msg.offset)
                continue
            try:
                record = codec.decode(event.value).record
                change = graph.observe(record)
            except DECODE_ERRORS as exc:
                await to_dlq(event, f"{type(exc).__name__}: {exc}")
                continue
            if not change.duplicate:
                contacts_table[record["event_id"]] = base64.b64encode(event.value).decode()
            await publish(change, msg.offset)
            await send_resolved(record, change.customer_id, msg.offset)
            log.info("contact_resolved", event_id=record["event_id"], customer_id=change.customer_id,
                     offset=msg.offset, duplicate=change.duplicate)

    def remember_due(customer_id: str, state: dict, partition: int) -> None:
        due = stitcher.next_deadline(state)
        if due is None:
            due_index.pop(customer_id, None)
            ticked.pop(customer_id, None)
        else:
            due_index[customer_id] = (due, partition)

    def see(partition: int, event_ms: int | None) -> int | None:
        """The partition's watermark after a record: the latest event time seen on it, less the
        allowed lateness (``THREADLINE_SLA_TIMER_GRACE_SECONDS``)."""
        idle_since[partition] = time.monotonic()
        if event_ms is not None:
            wm = event_ms - lateness
            if wm > watermarks.get(partition, wm - 1):
                watermarks[partition] = wm
        return watermarks.get(partition)

    @app.agent(stitch_in)
    async def conversations_agent(stream):
        async for event in measured(stream.events(), "conversations"):
            msg = event.message
            cid = event.key.decode() if event.key else ""
            headers = dict(msg.headers or [])
            contact_id = None
            try:
                if msg.topic == topics.commands:
                    cmd = json.loads(event.value)
                    wm = see(msg.partition, None)
                    state = conv_table.get(cid)
                    if cmd["type"] == "moved":
                        new, events = stitcher.remove(state, list(cmd["event_ids"]), cmd["to"], gen=int(cmd["gen"]),
                                                      wm=wm)
                        new["customer_id"] = cid
                    elif cmd["type"] == "tick" and state is not None:
                        new, events = stitcher.advance(state, int(cmd["wm"]))
                    else:  # "retire" of earlier versions: the moved contacts' commands do its work now
                        continue
                else:
                    record = codec.decode(event.value).record
                    contact_id = record["event_id"]
                    if not record.get("customer_id"):
                        raise ValueError("a resolved contact without customer_id")
                    cid = record["customer_id"]
                    state = conv_table.get(cid)
                    wm = see(msg.partition, to_millis(record["occurred_at"]))
                    gen = int(headers.get("gen", b"0") or 0)
                    new, events = stitcher.apply(state, record, wm=wm, gen=gen)
            except DECODE_ERRORS as exc:
                await to_dlq(event, f"{type(exc).__name__}: {exc}")
                continue
            if new is not state:
                new["p"] = msg.partition
                conv_table[cid] = new
            remember_due(cid, new, msg.partition)
            for e in events:
                await emit(topics.conversations, cid.encode(),
                           codec.encode(topics.conversations, schemas.CONVERSATION_EVENT, e), {"event_id": e["event_id"]})
                if e["event_type"] in metrics.SLA_EVENTS:
                    sla_events(metrics.SLA_EVENTS[e["event_type"]], e["channel"] or "other").inc()
                log.info("conversation_" + e["event_type"], event_id=e["event_id"], customer_id=cid,
                         contact_event_id=contact_id, version=e["version"], partition=msg.partition,
                         offset=msg.offset)

    def active_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.resolved}

    @app.timer(interval=1.0)
    async def clocks():
        """Watermarks and the clocks that fall due. A partition's watermark is the latest event time
        seen on it (less the allowed lateness); while the partition is idle (no record for
        ``THREADLINE_STREAMS_IDLE_SECONDS``) it follows the wall clock instead. A customer whose
        next deadline (a clock's due time, a conversation's window end) is behind its partition's
        watermark gets a ``tick`` command, so the state changes in the agent, in order."""
        active = active_partitions()
        if active - indexed_for:  # newly assigned (or recovered) partitions: index their clocks
            for cid, state in list(conv_table.items()):
                if isinstance(state, dict) and state.get("p") in active - indexed_for:
                    remember_due(cid, state, state["p"])
                    if state.get("wm") is not None:
                        watermarks[state["p"]] = max(watermarks.get(state["p"], state["wm"]), state["wm"])
            indexed_for.clear()
            indexed_for.update(active)
        indexed_for.intersection_update(active)
        now, mono = _now_ms(), time.monotonic()
        for p in active:
            if mono - idle_since.get(p, 0.0) >= rules.stitch.idle_seconds:
                wall = now - lateness
                if wall > watermarks.get(p, wall - 1):
                    watermarks[p] = wall
        for cid, (due, partition) in list(due_index.items()):
            wm = watermarks.get(partition)
            if wm is not None and due < wm and partition in active and ticked.get(cid) != due:
                ticked[cid] = due
                await emit(topics.commands, cid.encode(), json.dumps({"type": "tick", "wm": wm}).encode())

    @app.timer(interval=LAG_INTERVAL)
    async def consumer_lag():
        """threadline_consumer_lag of the partitions this worker processes: the end offset the
        consumer last saw minus the next offset its streams will read."""
        consumer = app.consumer
        lags = {}
        for tp in app.assignor.assigned_actives():
            try:
                read = consumer._read_offset.get(tp)  # the last offset a stream took from the partition
                position = read + 1 if read is not None else await consumer.position(tp)
                lags[(tp.topic, tp.partition)] = metrics.lag(consumer.highwater(tp), position)
            except Exception as exc:  # a partition revoked meanwhile: it is left out until the next update
                log.debug("consumer_lag_unknown", topic=tp.topic, partition=tp.partition, error=str(exc))
        lag_gauge.update(lags)

    return app


def unlink_command(a: str, b: str, *, command_id: str, at_ms: int | None = None) -> bytes:
    """The record ``threadline identity unlink`` writes to the graph topic (header kind=unlink)."""
    return json.dumps({"a": a, "b": b, "command_id": command_id, "at_ms": at_ms or _now_ms()}).encode()


class IdleStreamNotice(logging.Filter):
    """faust's consumer logs ERROR "Stream has not started processing ..." (and "Has not committed
    ... at all since worker start") for every partition on which it has seen no event since the
    worker started, every few seconds: on an idle, healthy worker that is hundreds of lines an hour
    that are not errors. They become DEBUG records; a worker that really stalls shows as consumer
    group lag (``threadline groups``, the lag metrics) and in /readyz."""

    IDLE = ("Stream has not started processing", "Has not committed")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and any(m in str(record.msg) for m in self.IDLE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


FAUST_CONSUMER_LOGGER = "faust.transport.drivers.aiokafka"


class StreamsWorker(faust.Worker):
    """A faust worker that is gone within SHUTDOWN_LIMIT seconds of SIGTERM, even if a component
    hangs while stopping (faust-streaming #324, #162)."""

    def on_setup_root_logger(self, logger, level: int) -> None:
        # faust's terminal spinner lowers the root logger to DEBUG, so every client debug record
        # would be built and dropped: measured at a tenth of the worker's time. No spinner.
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        consumer_log = logging.getLogger(FAUST_CONSUMER_LOGGER)
        if not any(isinstance(f, IdleStreamNotice) for f in consumer_log.filters):
            consumer_log.addFilter(IdleStreamNotice())

    def _on_sigterm(self) -> None:
        def hard_exit() -> None:
            log.warning("worker_shutdown_forced", after_seconds=SHUTDOWN_LIMIT)
            os._exit(0)

        timer = threading.Timer(SHUTDOWN_LIMIT, hard_exit)
        timer.daemon = True
        timer.start()
        super()._on_sigterm()


def loop_liveness(loop: asyncio.AbstractEventLoop, limit: float = LOOP_ANSWER_LIMIT):
    """/livez of a process run by ``loop``: alive while the loop is starting, or when it runs a
    no-op within ``limit`` seconds."""

    def alive() -> str | None:
        if not loop.is_running():
            return None if not loop.is_closed() else "the event loop is closed"
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed meanwhile
            return "the event loop is closed"
        if not answered.wait(limit):
            return f"the event loop did not answer within {limit:g} s"
        return None

    return alive


def streams_running(app: faust.App, loop: asyncio.AbstractEventLoop):
    """The readiness probe of the worker's own state: started, joined its consumer group (faust's
    own aiokafka consumer, not only some client of ours, reached the brokers and was given a
    generation), not rebalancing, tables recovered."""

    def probe() -> None:
        if not loop.is_running():
            raise RuntimeError("the worker is starting")
        if app.consumer_generation_id <= 0:
            raise RuntimeError(f"the consumer has not joined group {app.conf.id} yet")
        if app.rebalancing:
            raise RuntimeError("the consumer group is rebalancing")
        if getattr(app, "in_recovery", False):
            raise RuntimeError("tables are being recovered from their changelogs")

    return probe


def run_worker(settings: Settings, app_id: str = APP_ID, topics: StreamTopics | None = None) -> None:
    app = create_app(settings, app_id=app_id, topics=topics)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    worker = StreamsWorker(app, loglevel=settings.log_level, quiet=True)
    readiness = ops.Readiness(COMPONENT, [*ops.kafka_checks(settings),
                                          ops.Check("streams", streams_running(app, worker.loop))])
    ops.serve(settings.ops_host, settings.worker_ops_port, component=COMPONENT,
              liveness=loop_liveness(worker.loop), readiness=readiness, variable="THREADLINE_WORKER_OPS_PORT")
    worker.execute_from_commandline()
