"""Per-test projection schemas and topics on the real Kafka and PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from projectors.engine.runner import Sources
from schemas.codec import make_codec
from fixtures.projections import drop_projections


@pytest.fixture
def pg(settings):
    with psycopg.connect(settings.effective_pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def prefixed(settings, unique, pg):
    """Settings whose projection schemas are t<unique>_support, ...; dropped afterwards."""
    prefix = f"t{unique}_"
    yield settings.model_copy(update={"projection_prefix": prefix})
    drop_projections(pg, prefix)


@pytest.fixture
def sources(new_topic, catalog_topics) -> Sources:
    return Sources(
        contacts=new_topic(partitions=3), conversations=new_topic(partitions=3), identities=new_topic(partitions=3)
    )


@pytest.fixture(scope="session")
def codec(settings):
    return make_codec(settings)
