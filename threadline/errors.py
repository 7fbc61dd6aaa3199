"""The exceptions Threadline raises, split by what the caller should do about them.

ThreadlineError
├── RetryableError            the operation may succeed later as it is: back off and retry
│   ├── KafkaUnavailable      the broker did not acknowledge in time
│   └── RegistryUnavailable   the schema registry did not answer
└── FatalError                retrying the same input gives the same failure
    ├── ConfigError           settings or local stack set-up are wrong
    ├── TopicDriftError       a topic exists with settings other than the catalog's
    ├── SchemaError           a schema is invalid or incompatible with its published versions
    └── DecodeError           a record cannot be decoded: send it to a DLQ, never block on it
"""

from __future__ import annotations


class ThreadlineError(Exception):
    """Base of every error Threadline raises on purpose."""


class RetryableError(ThreadlineError):
    """Transient: the same call may succeed later."""


class KafkaUnavailable(RetryableError):
    pass


class RegistryUnavailable(RetryableError):
    pass


class FatalError(ThreadlineError):
    """Permanent for this input: retrying does not help."""


class ConfigError(FatalError):
    pass


class TopicDriftError(FatalError):
    def __init__(self, drifts: list[str]):
        self.drifts = drifts
        super().__init__("; ".join(drifts))


class SchemaError(FatalError):
    pass


class DecodeError(FatalError):
    """A record that cannot be decoded. ``reason`` is safe to put in a DLQ header."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
