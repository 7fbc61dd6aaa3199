"""The local stack: Kafka (KRaft), PostgreSQL and the schema registry, as local processes.

``up`` is idempotent: a part that already runs from this state folder is reused, never
started twice. ``down`` stops what this state folder started, apps first, and leaves no process.
"""

from __future__ import annotations

from dataclasses import dataclass

from threadline.process import instances, port_open
from threadline.settings import CodecKind, Settings
from threadline.tools.stack import apps, kafka_broker, postgres, schema_registry, setup


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    managed: bool
    running: bool
    answers: bool
    detail: str = ""


def up(settings: Settings, log=print) -> dict[str, bool]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    started = {}
    log(f"kafka {settings.stack.kafka_version} at {settings.kafka.bootstrap} ...")
    started["kafka"] = _start_kafka(settings)
    log(f"postgres at {settings.pg_display} ...")
    started["postgres"] = postgres.start(settings)
    if settings.registry.codec is CodecKind.CONFLUENT:
        log(f"schema registry at {settings.registry.url} ...")
        started["registry"] = _start_registry(settings)
    return started


def _start_kafka(settings: Settings) -> bool:
    # Built by the set-up step, never here: no download or build inside a start.
    return kafka_broker.start(settings, check_built=lambda: setup.require(settings, "kafka"))


def _start_registry(settings: Settings) -> bool:
    return schema_registry.start(settings, check_built=lambda: setup.require(settings, "registry"))


def down(settings: Settings) -> list[str]:
    stopped = [f"app-{n}" for n in apps.stop(settings)]
    if schema_registry.managed(settings).stop(timeout=20):
        stopped.append("registry")
    if kafka_broker.managed(settings).stop(timeout=60):
        stopped.append("kafka")
    if postgres.stop(settings):
        stopped.append("postgres")
    return stopped


INFRASTRUCTURE = ("kafka", "postgres", "registry")


def start_part(settings: Settings, name: str) -> bool:
    """Start one part (an infrastructure part, or one of ``apps.APPS``); True if it started it."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if name == "kafka":
        return _start_kafka(settings)
    if name == "postgres":
        return postgres.start(settings)
    if name == "registry":
        return _start_registry(settings)
    return bool(apps.start(settings, names=(name,)))


def stop_part(settings: Settings, name: str) -> bool:
    """Stop one part, however it was started; True if it ran."""
    if name == "kafka":
        return kafka_broker.managed(settings).stop(timeout=60)
    if name == "postgres":
        return postgres.stop(settings)
    if name == "registry":
        return schema_registry.managed(settings).stop(timeout=20)
    return bool(apps.stop(settings, names=(name,)))


def _probe(check) -> tuple[bool, str]:
    """``check`` answers a bool, or ``(bool, detail)``; an exception is a no with its text."""
    try:
        result = check()
        return (bool(result[0]), result[1]) if isinstance(result, tuple) else (bool(result), "")
    except Exception as exc:  # status reports every failure as text, whatever its kind
        return False, f"{type(exc).__name__}: {str(exc)[:120]}"


def status(settings: Settings) -> list[PartStatus]:
    parts = []
    host, port = kafka_broker.host_port(settings)
    ok, why = _probe(lambda: port_open(host, port) and kafka_broker.ready(settings))
    parts.append(PartStatus("kafka", settings.kafka.bootstrap, True, kafka_broker.managed(settings).running(), ok, why))
    ok, why = _probe(lambda: postgres.ready(settings))
    parts.append(
        PartStatus(
            "postgres",
            settings.pg_display,
            settings.embedded_pg,
            postgres.running(settings) if settings.embedded_pg else ok,
            ok,
            why,
        )
    )
    if settings.registry.codec is CodecKind.CONFLUENT:
        ok, why = _probe(lambda: schema_registry.ready(settings))
        parts.append(
            PartStatus("registry", settings.registry.url, True, schema_registry.managed(settings).running(), ok, why)
        )
    else:
        parts.append(
            PartStatus(
                "registry",
                "single-object encoding (schemas/)",
                False,
                False,
                True,
                "no registry: THREADLINE_CODEC=single-object",
            )
        )
    for name in apps.APPS:
        url = apps.url(settings, name)
        running = bool(instances(settings, name))
        answers, why = _probe(lambda: apps.readiness(url)) if url else (running, "")
        # A part that answers but that this state folder did not start is "external", never "stopped".
        parts.append(PartStatus(name, url or "-", running or not answers, running, answers, why))
    if parts[0].answers:
        parts += group_parts(settings)
    parts += projection_parts(settings)
    return parts


def group_parts(settings: Settings) -> list[PartStatus]:
    """One line per consumer group on the cluster (the worker's threadline-streams and any other):
    lag = end offsets − committed offsets, per topic, with the group's state and members."""
    from threadline.groups import group_lags

    try:
        lags = group_lags(settings)
    except Exception as exc:  # status reports every failure as text, whatever its kind
        return [
            PartStatus(
                "groups",
                settings.kafka.bootstrap,
                False,
                False,
                False,
                f"lag unknown: {type(exc).__name__}: {exc}"[:160],
            )
        ]
    return group_rows(lags)


def group_rows(lags) -> list[PartStatus]:
    """Pure: the status lines of the groups; groups nobody is in and that never committed (left
    behind by tools and tests) say nothing about lag and are counted, not listed."""
    shown = [g for g in lags if g.members or g.topics]
    parts = [PartStatus(f"group {g.group}", "kafka", False, g.members > 0, True, g.line()) for g in shown]
    if len(shown) < len(lags):
        parts.append(
            PartStatus(
                "groups",
                "kafka",
                False,
                False,
                True,
                f"{len(lags) - len(shown)} empty groups without commits not shown (threadline groups)",
            )
        )
    return parts


def projection_parts(settings: Settings) -> list[PartStatus]:
    """One line per projector: how many events and seconds it is behind its topics."""
    from projectors.lag import (
        projection_lag,  # lazy: the kernel does not need projectors to start
    )

    try:
        lags = projection_lag(settings)
    except Exception as exc:  # status reports every failure as text, whatever its kind
        return [PartStatus("projections", "-", False, False, False, f"lag unknown: {type(exc).__name__}: {exc}"[:160])]
    return [
        PartStatus(
            f"projection {lag.projector}",
            "postgres",
            False,
            False,
            True,
            f"lag {lag.events:,} events, {lag.seconds:.1f} s",
        )
        for lag in lags
    ]
