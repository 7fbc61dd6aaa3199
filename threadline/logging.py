"""One structlog configuration for every component.

JSON lines in production (and whenever stderr is not a terminal), a readable console renderer
on a terminal. Components bind ``event_id``, ``customer_id``, ``topic``, ``partition`` and
``offset`` where they have them; message bodies and personal data are never logged at info.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, Processor

from threadline.settings import LogFormat, Settings

_configured = False


def _drop_body_fields(_logger, method_name: str, event_dict: EventDict) -> EventDict:
    """Guard against personal data: bodies and identity values only reach debug logs."""
    if method_name != "debug":
        for key in ("text", "body", "payload", "identities", "email", "phone"):
            if key in event_dict:
                event_dict[key] = "<redacted>"
    return event_dict


def configure_logging(settings: Settings, *, force: bool = False) -> None:
    global _configured
    if _configured and not force:
        return
    fmt = settings.log_format
    if fmt is LogFormat.AUTO:
        fmt = LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    level = logging.getLevelName(settings.log_level.upper())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_body_fields,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level if isinstance(level, int) else 20),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route the standard library (kafka-python, aiokafka, uvicorn) through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    # format_exc_info turns a record's exc_info into the traceback text: without it the JSON
    # renderer would print the traceback object's repr and the stack would be lost.
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("threadline").setLevel(level if isinstance(level, int) else 20)
    _configured = True


def get_logger(name: str = "threadline", **initial) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name, **initial)
