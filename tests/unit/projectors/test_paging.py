"""Cursor paging of the read API, the pure part: the keyset predicate of an order and the opaque
cursor's round trip and rejections (projectors/api/paging.py, queries.py)."""

from __future__ import annotations

import base64
import json

import pytest

from projectors.api import paging, queries
from projectors.api.queries import Key, Order


def test_the_keyset_predicate_starts_after_the_last_row_in_each_direction():
    order = Order("x", (Key("a", "timestamptz", descending=True), Key("b", "text")))
    assert order.order_by() == "a desc, b"
    assert order.after() == ("((a < %(c0)s::timestamptz) or (a = %(c0)s::timestamptz and b > %(c1)s::text))")
    assert order.key_columns() == "(a)::text as _cursor_0, (b)::text as _cursor_1"


def test_every_list_order_ends_with_the_id_of_its_row():
    for order in (queries.CONTACTS, queries.TIMELINE, queries.CONVERSATIONS, queries.INBOX, queries.REVIEWS):
        assert order.keys[-1].expr in ("event_id", "conversation_id"), order.name
    assert [k.expr for k in queries.ENGAGEMENT.keys] == ["day", "channel"]  # one row per day and channel


def test_a_cursor_round_trips_and_names_its_list():
    keys = ["2026-11-30 04:52:00.123+00", "3f2c6f8e-6c3e-4b0e-9d52-2c7e0a0f5d11"]
    cursor = paging.encode(queries.CONTACTS, keys)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert paging.decode(queries.CONTACTS, cursor) == {"c0": keys[0], "c1": keys[1]}
    with pytest.raises(paging.BadCursor, match="not a cursor of this list"):
        paging.decode(queries.TIMELINE, paging.encode(queries.INBOX, ["infinity", keys[0], "c"]))


@pytest.mark.parametrize(
    "keys",
    [
        ["not a time", "3f2c6f8e-6c3e-4b0e-9d52-2c7e0a0f5d11"],
        ["2026-11-30T00:00:00+00:00", "not-a-uuid"],
        ["2026-11-30T00:00:00+00:00"],
        [1, 2],
        ["2026-11-30T00:00:00+00:00", "3f2c6f8e\x00"],
    ],
)
def test_a_cursor_with_keys_of_the_wrong_shape_is_refused_before_any_sql(keys):
    with pytest.raises(paging.BadCursor):
        paging.decode(queries.CONTACTS, paging.encode(queries.CONTACTS, keys))


@pytest.mark.parametrize("cursor", ["@@@", "e30", "bnVsbA", "W10"])  # not base64, {}, null, []
def test_what_is_not_a_cursor_is_refused(cursor):
    with pytest.raises(paging.BadCursor):
        paging.decode(queries.CONTACTS, cursor)


def test_a_cursor_with_an_offset_is_refused_and_without_one_pages_by_key():
    cursor = paging.encode(queries.INBOX, ["infinity", "2026-11-30T00:00:00+00:00", "conv-1"])
    with pytest.raises(paging.BadCursor, match="either cursor or offset"):
        paging.page_sql(queries.inbox("s"), queries.INBOX, cursor, offset=10)
    sql, params = paging.page_sql(queries.inbox("s"), queries.INBOX, cursor, offset=0)
    assert params == {"c0": "infinity", "c1": "2026-11-30T00:00:00+00:00", "c2": "conv-1"}
    assert queries.INBOX.after() in sql and sql.endswith(
        "order by coalesce(sla_due_at, 'infinity'), last_event_at, conversation_id limit %(limit)s offset %(offset)s"
    )


def test_the_next_cursor_is_given_only_for_a_full_page_and_the_key_columns_are_not_items():
    rows = [
        {"event_id": "e1", "_cursor_0": "t1", "_cursor_1": "e1"},
        {"event_id": "e2", "_cursor_0": "t2", "_cursor_1": "e2"},
    ]
    items, after = paging.split_keys(queries.CONTACTS, rows, limit=2)
    assert items == [{"event_id": "e1"}, {"event_id": "e2"}]
    assert json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))) == {"l": "contacts", "k": ["t2", "e2"]}
    assert paging.split_keys(queries.CONTACTS, rows, limit=3)[1] is None
