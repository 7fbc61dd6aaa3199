"""``threadline worker`` and ``threadline identity unlink``: registered on the main CLI by ``register``."""

from __future__ import annotations

import typer
from rich.console import Console

from threadline.commands import CommandGroups, fail, load_settings

out = Console()
identity_app = typer.Typer(no_args_is_help=True, help="The identity graph.")


def worker(
    app_id: str = typer.Option("threadline-streams", help="faust app id (consumer group)"),
    topic_prefix: str = typer.Option("", help="read and write <prefix>.<topic> instead of the catalog's"),
    stages: str = typer.Option(
        "route,identity,conversations", help="the stages this worker runs (comma-separated); the bench runs one alone"
    ),
):
    """The stream processors (faust worker): identity, conversations, SLA clocks."""
    from streams.app import STAGES, StreamTopics, run_worker
    from threadline.process import claim

    chosen = tuple(x.strip() for x in stages.split(",") if x.strip())
    if not chosen or set(chosen) - set(STAGES):
        fail(f"--stages takes a comma-separated subset of {', '.join(STAGES)}", 2)
    s = load_settings()
    claim(s, "worker")  # threadline stop / down find it, however it was started
    topics = StreamTopics.prefixed(topic_prefix) if topic_prefix else StreamTopics()
    run_worker(s, app_id=app_id, topics=topics, stages=chosen)


@identity_app.command("unlink")
def identity_unlink(
    a: str = typer.Argument(..., help="identity as kind:[platform:]value, e.g. email:giulia@example.it"),
    b: str = typer.Argument(..., help="the other identity, e.g. phone:+393471234567"),
    topic_prefix: str = typer.Option("", help="as given to the worker"),
):
    """Withdraw the link between two identities: they are never one customer again."""
    import uuid

    from schemas.keystore import pseudonymous
    from streams.app import StreamTopics, unlink_command
    from threadline.errors import KafkaUnavailable
    from threadline.kafka import BoundedProducer

    if a == b or ":" not in a or ":" not in b:
        fail("give two different identities as kind:[platform:]value", 2)
    topics = StreamTopics.prefixed(topic_prefix) if topic_prefix else StreamTopics()
    command_id = str(uuid.uuid4())
    shown = f"{a} ⟂ {b}"
    a, b = (pseudonymous(load_settings(), x) for x in (a, b))  # privacy on: the graph knows pseudonyms
    producer = BoundedProducer.from_settings(load_settings())  # every wait within THREADLINE_PRODUCE_DEADLINE_SECONDS
    try:
        producer.wait(
            [
                producer.send(
                    topics.graph,
                    key=b"unlink",
                    value=unlink_command(a, b, command_id=command_id),
                    headers=[("kind", b"unlink")],
                )
            ],
            what="unlink command",
        )
    except KafkaUnavailable as exc:
        fail(f"{exc}: the unlink was not sent; run the command again once Kafka is back", 1)
    finally:
        producer.close()
    out.print(f"unlink {command_id} sent: {shown}")


def register(groups: CommandGroups) -> None:
    groups.app.command("worker")(worker)
    groups.app.add_typer(identity_app, name="identity")
