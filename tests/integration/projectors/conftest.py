"""Per-test projection schemas and topics on the real Kafka and PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

import story as st

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


@pytest.fixture
def built(prefixed, sources, codec, unique):
    """The cast of story.py published and projected (a test file may build its own)."""
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s)
    st.project(prefixed, sources, codec=codec)
    return s


@pytest.fixture(scope="session")
def codec(settings):
    return make_codec(settings)
