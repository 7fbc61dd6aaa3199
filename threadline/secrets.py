"""Signing keys and passwords from settings or files, never from code.

``secret(settings.connectors, "twilio_auth_token")`` returns the value of
``THREADLINE_TWILIO_AUTH_TOKEN`` or else the first line of the file named by
``THREADLINE_TWILIO_AUTH_TOKEN_FILE``; None when neither is set. Values are ``SecretStr`` in the
settings, so they print as ``**********``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from threadline.errors import ConfigError


def secret(group: BaseModel, name: str) -> str | None:
    """The secret ``name`` of a settings group (threadline.settings), or of any model with the
    fields ``name`` and ``name_file``. Errors name the setting as its variable is spelled."""
    if name not in type(group).model_fields:  # a misspelt name must not read as "not configured"
        raise KeyError(f"{type(group).__name__} has no secret {name!r}")
    value = getattr(group, name)
    if value is not None:
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        return raw or None
    path: Path | None = getattr(group, f"{name}_file", None)
    if path is None:
        return None
    flat_names = getattr(type(group), "flat_names", None)
    setting = {f: flat for flat, f in flat_names().items()}.get(name, name) if flat_names else name
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{setting}_file: cannot read {path}: {exc.strerror}") from exc
    first = text.splitlines()[0].strip() if text.strip() else ""
    if not first:
        raise ConfigError(f"{setting}_file: {path} is empty")
    return first
