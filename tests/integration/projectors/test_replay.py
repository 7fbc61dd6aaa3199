"""Rebuild beside the live projection and swap; time travel by event time; export to files."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pyarrow.parquet as pq
import pytest

import story as st
from compare import same_rows
from projector_events import contact, produce
from projectors.export import export
from projectors.engine.schema import live_schema
from projectors.read_models import read_model_projector
from projectors.replay import rebuild


@pytest.fixture
def published(prefixed, sources, codec, unique):
    s = st.build(unique)
    st.publish(prefixed, codec, sources, s, garbage=[b"\x07not-avro"])
    return s


@pytest.mark.parametrize("projection", ["support", "sales", "marketing"])
def test_a_rebuild_is_identical_to_the_live_projection_row_by_row(prefixed, sources, codec, published, projection):
    st.project(prefixed, sources, projections=[projection], codec=codec)
    result = rebuild(prefixed, projection, sources=sources, swap=False, codec=codec)
    assert (
        not result.swapped
        and result.events
        == sum(len(x) for x in (published.contacts, published.conversations, published.identities)) + 1
    )
    live, rebuilt = same_rows(prefixed, live_schema(prefixed, projection), result.schema, projection)
    assert rebuilt["contacts"] and rebuilt["customers"] and rebuilt["conversations"]
    for name in live:
        assert rebuilt[name] == live[name], name


def test_a_swapped_in_rebuild_serves_under_the_live_name_and_the_live_projector_follows_it(
    prefixed, sources, codec, published, pg, unique
):
    schema = live_schema(prefixed, "support")
    live = read_model_projector(prefixed, "support", sources=sources, codec=codec)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    try:
        _wait(
            lambda: (
                pg.execute(f"select count(*) from {schema}.contacts").fetchone()[0] == len(published.contacts)
                if _exists(pg, schema)
                else False
            )
        )
        before = pg.execute(f"select build_id from {schema}.meta").fetchone()[0]
        result = rebuild(prefixed, "support", sources=sources, codec=codec)
        assert result.swapped and result.schema == schema
        assert pg.execute(f"select build_id from {schema}.meta").fetchone()[0] == result.build_id != before
        assert (
            pg.execute("select count(*) from pg_namespace where nspname like %s", (schema + "\\_\\_%",)).fetchone()[0]
            == 0
        )  # build renamed, old schema dropped

        late = contact(published.giulia, f"{unique}-late", "chat", published.now, text="ci siete?", language="it")
        produce(prefixed, codec, sources.contacts, "contact", [late])
        _wait(
            lambda: (
                pg.execute(
                    f"select count(*) from {schema}.contacts where event_id = %s", (late["event_id"],)
                ).fetchone()[0]
                == 1
            )
        )
        assert thread.is_alive()
    finally:
        live.stop_event.set()
        thread.join(30)
    stored = dict(
        ((t, p), o)
        for t, p, o in pg.execute(
            "select topic, partition, next_offset from projection_offsets where projector = %s", (schema,)
        ).fetchall()
    )
    assert sum(o for (t, _), o in stored.items() if t == sources.contacts) == len(published.contacts) + 2


def test_as_of_builds_the_projection_as_the_agent_saw_it_then(prefixed, sources, codec, published, pg):
    tweet_at = published.contacts[2]["occurred_at"]
    as_of = tweet_at + timedelta(minutes=10)  # after the tweet and the DM, before the email and the merge
    result = rebuild(prefixed, "support", sources=sources, as_of=as_of, codec=codec)
    assert not result.swapped and "_asof_" in result.schema
    s = result.schema
    channels = [
        r[0]
        for r in pg.execute(
            f"select channel from {s}.timeline where customer_id = %s order by occurred_at", (published.giulia,)
        ).fetchall()
    ]
    assert channels == ["store", "twitter", "twitter"]  # the old chat id was not merged yet
    assert (
        pg.execute(
            f"select customer_id from {s}.customers where origin_customer_id = %s", (published.giulia_old,)
        ).fetchone()[0]
        == published.giulia_old
    )
    state = pg.execute(
        f"select sla_state, messages, channel from {s}.inbox where conversation_id = %s", (published.conv_giulia,)
    ).fetchone()
    assert state == ("running", 2, "twitter")  # due an hour after the tweet: not breached yet then
    assert pg.execute(f"select count(*) from {s}.contacts where occurred_at > %s", (as_of,)).fetchone()[0] == 0


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_an_export_of_an_event_time_window_reads_back_with_pyarrow(prefixed, sources, codec, published, tmp_path, fmt):
    start, end = published.now - timedelta(days=2), published.now
    path = tmp_path / f"events.{fmt}"
    result = export(prefixed, sources.topics(), start, end, fmt, path, codec=codec)
    everything = published.contacts + published.conversations + published.identities
    want = sorted(r["event_id"] for r in everything if start <= r["occurred_at"] < end)
    assert result.undecodable == 1 and result.read == len(everything) + 1
    if fmt == "parquet":
        table = pq.read_table(path)
        got = table.to_pylist()
        assert table.schema.field("occurred_at").type.tz == "UTC"
        records = [json.loads(r["record"]) for r in got]
    else:
        import pyarrow.json as pj

        table = pj.read_json(path)
        got = table.to_pylist()
        records = [r["record"] for r in got]
    assert sorted(r["event_id"] for r in got) == want
    assert [r["event_id"] for r in records] == [r["event_id"] for r in got]
    times = [r["occurred_at"] for r in got]
    assert times == sorted(times)
    assert {r["topic"] for r in got} == set(sources.topics())


def _exists(pg, schema) -> bool:
    return pg.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone() is not None


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_a_swap_does_not_wait_for_offsets_of_a_topic_the_rebuild_does_not_read(
    prefixed, sources, codec, published, pg, unique
):
    """The live projector once read an older topic (say contacts.resolved.v0): its stored offsets
    there are no reason for the rebuild's catch-up to wait, and they are kept."""
    st.project(prefixed, sources, projections=["support"], codec=codec)
    schema = live_schema(prefixed, "support")
    old_topic = f"test.{unique}.retired"
    pg.execute(
        "insert into projection_offsets (projector, topic, partition, next_offset) values (%s, %s, 0, 42)",
        (schema, old_topic),
    )
    done: list = []
    thread = threading.Thread(
        target=lambda: done.append(rebuild(prefixed, "support", sources=sources, codec=codec)), daemon=True
    )
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the rebuild is still waiting to catch up on a topic it does not read"
    assert done and done[0].swapped and done[0].schema == schema
    assert pg.execute(
        "select next_offset from projection_offsets where projector = %s and topic = %s", (schema, old_topic)
    ).fetchone() == (42,)
