"""Threadline's shared kernel: settings, logging, errors, the topic catalog, Kafka clients,
the local stack and the command line. The channel, stream and projection packages
(connectors/, streams/, projectors/) and the event contract (schemas/) depend on it, never
the other way round."""

__version__ = "0.1.0"
