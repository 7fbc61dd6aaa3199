"""Cursor paging on every list of the read API: paging through a list with ``next_cursor`` yields
every row exactly once, in the list's order, also while rows are added; a bad cursor is 400 JSON
naming ``cursor``, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

import story as st
from projector_events import contact
from fixtures.tokens import API_TOKENS, bearer, token_settings
from projectors.api import create_app
from projectors.contacts import contacts_projector
from projectors.replay import end_offsets


@pytest.fixture
def built(prefixed, sources, codec, unique, pg):
    s = st.build(unique)
    # Emre withdrew marketing consent, so marketing's lists leave his review out: Giulia reviews too
    s.contacts.append(
        contact(
            s.giulia,
            f"{unique}-giulia-review",
            "review",
            s.now - timedelta(hours=4),
            text="Alla fine tutto bene",
            metadata={"rating": "4"},
            identities=[{"kind": "email", "value": f"giulia.{unique}@example.it"}],
        )
    )
    st.publish(prefixed, codec, sources, s)
    st.project(prefixed, sources, codec=codec)
    name = f"{prefixed.projections.prefix}contacts"  # the prefixed fixture removes its tracking rows
    contacts_projector(prefixed, name=name, topic=sources.contacts, codec=codec).run(
        stop_at=end_offsets(prefixed, [sources.contacts])
    )
    yield s
    pg.execute("delete from skeleton.contacts where source_topic = %s", (sources.contacts,))


@pytest.fixture
def api(prefixed, built):
    with TestClient(
        create_app(prefixed.model_copy(update=token_settings())), headers=bearer(API_TOKENS["admin"])
    ) as client:
        yield client


def lists(s) -> dict[str, tuple[str, dict, str]]:
    """Every paged list: (path, filters, the field that identifies a row)."""
    return {
        "customer contacts": (f"/customers/{s.giulia}/contacts", {}, "event_id"),
        "timeline": (f"/customers/{s.giulia}/timeline", {}, "event_id"),
        "conversations": (f"/customers/{s.giulia}/conversations", {}, "conversation_id"),
        "inbox": ("/support/inbox", {}, "conversation_id"),
        "engagement": ("/marketing/engagement", {}, None),
        "reviews": ("/marketing/reviews", {}, "event_id"),
    }


def _all_pages(api, path: str, params: dict, limit: int) -> tuple[list[dict], int]:
    items, pages, cursor = [], 0, None
    while True:
        r = api.get(path, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        assert len(body["items"]) <= limit
        if cursor is None:
            return items, pages
        assert body.get("next_offset") is None or pages == 1  # a cursor page points at the next cursor only
        assert pages < 1000


def test_paging_with_cursors_yields_every_row_exactly_once_in_the_lists_order(api, built):
    for what, (path, params, _) in lists(built).items():
        whole = api.get(path, params={**params, "limit": 500}).json()
        assert whole["next_cursor"] is None and whole["items"], what
        for limit in (1, 2, 3):
            paged, pages = _all_pages(api, path, params, limit)
            assert paged == whole["items"], (what, limit)
            assert pages >= len(whole["items"]) // limit, what


def test_the_contacts_list_pages_every_row_there_exactly_once_while_earlier_rows_are_added(api, built, pg, sources):
    first = api.get("/contacts", params={"limit": 2})
    assert first.status_code == 200, first.text
    seen = [i["event_id"] for i in first.json()["items"]]
    cursor = first.json()["next_cursor"]
    there = {str(e) for (e,) in pg.execute("select event_id from skeleton.contacts").fetchall()}
    # A row that sorts before the page already read: offset paging would give a row twice.
    early = datetime(2000, 1, 1, tzinfo=UTC)
    pg.execute(
        "insert into skeleton.contacts (event_id, customer_id, connector, channel, direction, occurred_at,"
        " recorded_at, text, record, source_topic, source_partition, source_offset)"
        " values (%s, 'c-early', 'test', 'chat', 'inbound', %s, %s, 'early', '{}', %s, 0, 0)",
        (str(uuid.uuid4()), early, early + timedelta(seconds=1), sources.contacts),
    )
    while cursor:
        body = api.get("/contacts", params={"limit": 50, "cursor": cursor}).json()
        seen += [i["event_id"] for i in body["items"]]
        cursor = body["next_cursor"]
    assert len(seen) == len(set(seen)), "a row came twice"
    assert there <= set(seen), "a row that was there was skipped"


def _cursor(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_a_bad_cursor_is_400_json_naming_the_cursor(api, built):
    inbox = api.get("/support/inbox", params={"limit": 1}).json()["next_cursor"]
    timeline = api.get(f"/customers/{built.giulia}/timeline", params={"limit": 1}).json()["next_cursor"]
    assert inbox and timeline
    bad = {
        "garbage": ("/support/inbox", {"cursor": "%%%not-base64"}),
        "not json": ("/support/inbox", {"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}),
        "another list's": ("/support/inbox", {"cursor": timeline}),
        "keys of the wrong type": ("/support/inbox", {"cursor": _cursor({"l": "inbox", "k": ["x", "y", "z"]})}),
        "too few keys": ("/support/inbox", {"cursor": _cursor({"l": "inbox", "k": ["infinity"]})}),
        "a NUL in a key": (
            "/marketing/engagement",
            {"cursor": _cursor({"l": "engagement", "k": ["2026-01-01", "\x00"]})},
        ),
        "with an offset": ("/support/inbox", {"cursor": inbox, "offset": 3}),
        "too long": ("/contacts", {"cursor": "a" * 5000}),
    }
    for what, (path, params) in bad.items():
        r = api.get(path, params=params)
        assert r.status_code == 400, (what, r.status_code, r.text)
        body = r.json()
        assert body["error"] == "invalid_parameters", (what, body)
        assert [f["field"] for f in body["fields"]] == ["cursor"], (what, body)
    for limit in (0, 501, "x"):
        r = api.get("/support/inbox", params={"limit": limit})
        assert r.status_code == 400 and [f["field"] for f in r.json()["fields"]] == ["limit"], r.text
