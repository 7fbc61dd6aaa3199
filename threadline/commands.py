"""What the features' commands share, and how they join the ``threadline`` command line.

Each feature has a ``cli.py`` with ``register(groups)``: it adds its commands to the groups it
is given (``threadline ingest``, ``threadline serve gateway``, ``threadline worker``,
``threadline project`` ...). The command line itself (``threadline/tools/cli.py``) makes the
groups and calls every feature's ``register``: the kernel names no feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import typer
from rich.console import Console

from threadline.errors import ConfigError
from threadline.logging import configure_logging
from threadline.settings import Settings

err = Console(stderr=True)


@dataclass(frozen=True)
class CommandGroups:
    app: typer.Typer  # threadline <command>
    serve: typer.Typer  # threadline serve <service>


def load_settings() -> Settings:
    """The settings of this environment, with logging configured from them."""
    try:
        s = Settings()
    except ConfigError as exc:
        fail(str(exc), 2)
    configure_logging(s)
    return s


def fail(message: str, code: int = 1) -> NoReturn:
    """A clear message on stderr and the exit code (1: the operation failed, 2: usage or configuration)."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
