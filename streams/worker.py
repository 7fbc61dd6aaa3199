"""The worker process around the app: a faust Worker that stops in bounded time, quiet idle-stream
notices, the liveness and readiness probes, and the consumer lag metric."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

import faust
import mode

from streams.stage import COMPONENT, log
from threadline import collector, metrics, ops
from threadline.settings import Settings

SHUTDOWN_LIMIT = 25.0  # seconds a worker may take to stop after SIGTERM before it exits hard
LAG_INTERVAL = 5.0  # seconds between updates of threadline_consumer_lag
LOOP_ANSWER_LIMIT = 5.0  # seconds the event loop may take to answer /livez
FAUST_CONSUMER_LOGGER = "faust.transport.drivers.aiokafka"
# Net new container objects between two young-generation collections once the worker has started
# (threadline.collector): a batch of records allocates tens of thousands of containers that
# reference counting frees when the batch is done; at CPython's 700 the collector walked the
# worker's whole heap (faust, aiokafka, the schemas, the graph's read cache) every few batches:
# measured at about a third of the identity stage's CPU (py-spy and gc.callbacks, the bench batch).
GC_GEN0_THRESHOLD = 20_000


def add_lag_metric(app: faust.App) -> None:
    lag_gauge = metrics.LagGauge(COMPONENT)

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


def _exit_after_limit() -> None:
    """Exit hard if the process is still there SHUTDOWN_LIMIT seconds from now."""

    def hard_exit() -> None:
        log.warning("worker_shutdown_forced", after_seconds=SHUTDOWN_LIMIT)
        os._exit(0)

    timer = threading.Timer(SHUTDOWN_LIMIT, hard_exit)
    timer.daemon = True
    timer.start()


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

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        collector.tune_gc(GC_GEN0_THRESHOLD)

    def _on_sigterm(self) -> None:
        _exit_after_limit()
        super()._on_sigterm()


class RunnerWorker(mode.Worker):
    """The process of a worker that runs only stages of runners (``streams.batch_runner``: route,
    identity, each a consumer group of its own) without a faust app, which would have nothing to
    consume. Stops within SHUTDOWN_LIMIT seconds of SIGTERM like StreamsWorker;
    the collector tuned once the runner has started."""

    async def on_first_start(self) -> None:
        await super().on_first_start()
        collector.tune_gc(GC_GEN0_THRESHOLD)

    def _on_sigterm(self) -> None:
        _exit_after_limit()
        super()._on_sigterm()


def uvloop_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop event loop, the current one of this thread, and uvloop's for every loop made
    after (the one faust's consumer thread starts): the futures, callbacks and socket writes of
    every record consumed and produced cost less than on asyncio's own loop (faust supports it:
    ``faust -L uvloop``)."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


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
    generation), not rebalancing, tables recovered; and each stage runner's consumer (route,
    identity: ``streams.batch_runner``) joined its stage's group."""

    runners = getattr(app, "runners", ())  # the stages with a consumer group of their own

    def probe() -> None:
        if not loop.is_running():
            raise RuntimeError("the worker is starting")
        if app.agents:  # faust consumes for some stage of this worker
            if app.consumer_generation_id <= 0:
                raise RuntimeError(f"the consumer has not joined group {app.conf.id} yet")
            if app.rebalancing:
                raise RuntimeError("the consumer group is rebalancing")
            if getattr(app, "in_recovery", False):
                raise RuntimeError("tables are being recovered from their changelogs")
        for runner in runners:
            if (why := runner.ready) is not None:
                raise RuntimeError(why)

    return probe


def run_runners(runners: list, settings: Settings) -> None:
    """``threadline worker --stages identity`` (or ``route``, or both): the stages' runners as the
    process, with the same probes as a faust worker's (ready once each consumer has joined its
    stage's group)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    loop = uvloop_loop()
    worker = RunnerWorker(*runners, loglevel=settings.log_level, quiet=True, loop=loop)

    def joined() -> None:
        if not loop.is_running():
            raise RuntimeError("the worker is starting")
        for runner in runners:
            if (why := runner.ready) is not None:
                raise RuntimeError(why)

    readiness = ops.Readiness(COMPONENT, [*ops.kafka_checks(settings), ops.Check("streams", joined)])
    ops.serve(
        settings.endpoints.ops_host,
        settings.endpoints.worker_ops_port,
        component=COMPONENT,
        liveness=loop_liveness(loop),
        readiness=readiness,
        variable="THREADLINE_WORKER_OPS_PORT",
    )
    worker.execute_from_commandline()


def run_worker(app: faust.App, settings: Settings) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    worker = StreamsWorker(app, loglevel=settings.log_level, quiet=True, loop=uvloop_loop())
    readiness = ops.Readiness(
        COMPONENT, [*ops.kafka_checks(settings), ops.Check("streams", streams_running(app, worker.loop))]
    )
    ops.serve(
        settings.endpoints.ops_host,
        settings.endpoints.worker_ops_port,
        component=COMPONENT,
        liveness=loop_liveness(worker.loop),
        readiness=readiness,
        variable="THREADLINE_WORKER_OPS_PORT",
    )
    worker.execute_from_commandline()
