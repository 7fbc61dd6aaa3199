"""An idle, healthy worker logs no ERROR lines: faust's "stream has not started processing"
notices for partitions without traffic are demoted to DEBUG (streams/app.py IdleStreamNotice)."""

from __future__ import annotations

import logging

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.worker import FAUST_CONSUMER_LOGGER, IdleStreamNotice


@pytest.fixture
def consumer_log():
    logger = logging.getLogger(FAUST_CONSUMER_LOGGER)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, saved_filters, saved_level = Keep(logging.DEBUG), logger.filters[:], logger.level
    logger.addHandler(handler)
    logger.addFilter(IdleStreamNotice())
    logger.setLevel(logging.INFO)
    yield logger, records
    logger.removeHandler(handler)
    logger.filters[:] = saved_filters
    logger.setLevel(saved_level)


@pytest.mark.parametrize(
    "template",
    [faust_aiokafka.SLOW_PROCESSING_STREAM_IDLE_SINCE_START, faust_aiokafka.SLOW_PROCESSING_NO_COMMIT_SINCE_START],
)
def test_faust_idle_partition_notices_are_not_errors(consumer_log, template):
    logger, records = consumer_log
    # the way mode's CompositeLogger formats it: a prefix, faust's text, then the causes
    logger.error(
        "[^---AIOKafkaConsumerThread]: " + template + "\nThere are multiple possible explanations ...",
        "TP(topic='contacts.v1', partition=3)",
        "15 minutes ago",
    )
    assert [r for r in records if r.levelno >= logging.ERROR] == []


def test_other_consumer_errors_stay_errors(consumer_log):
    logger, records = consumer_log
    logger.error("Got exception: %r", RuntimeError("fetch broke"))
    assert [r.levelname for r in records] == ["ERROR"]
