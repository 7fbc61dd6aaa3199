"""Placeholder until the registry recipe lands."""
from threadline.errors import ConfigError
from threadline.stack.process import Managed

def managed(settings):
    return Managed("registry", settings.state_dir)

def start(settings, timeout: float = 120.0) -> bool:
    raise ConfigError("registry not wired yet")

def ready(settings) -> bool:
    return False
