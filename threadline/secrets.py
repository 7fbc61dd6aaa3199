"""Signing keys and passwords from settings or files, never from code.

``secret(settings, "twilio_auth_token")`` returns the value of ``THREADLINE_TWILIO_AUTH_TOKEN``
or else the first line of the file named by ``THREADLINE_TWILIO_AUTH_TOKEN_FILE``; None when
neither is set. Values are ``SecretStr`` in the settings, so they print as ``**********``.
"""

from __future__ import annotations

from pathlib import Path

from threadline.errors import ConfigError
from threadline.settings import Settings


def secret(settings: Settings, name: str) -> str | None:
    value = getattr(settings, name, None)
    if value is not None:
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        return raw or None
    path: Path | None = getattr(settings, f"{name}_file", None)
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}_file: cannot read {path}: {exc.strerror}") from exc
    first = text.splitlines()[0].strip() if text.strip() else ""
    if not first:
        raise ConfigError(f"{name}_file: {path} is empty")
    return first
