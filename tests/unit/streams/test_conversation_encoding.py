"""The conversations stage's output and state, made cheaper without changing what they say:
conversation events encoded a change at a time (``EventEncoder``) are the codec's bytes, and the
outbox's compact rows (``_pack``, kept as JSON text) give back the very events, old states' rows
included."""

from __future__ import annotations

import copy
from datetime import datetime

import orjson
import pytest

import schemas
from schemas.codec import SingleObjectCodec
from streams.conversations import EVENT_KEYS, Stitcher, _pack, _unpack
from streams.conversations_stage import EventEncoder
from tests.unit.streams.test_conversations import HOUR, MIN, agent, contact

TOPIC = "t.conversations"


def story():
    return [
        contact("t", "twitter", 0, facts=[("order_number", "100234")], language="it"),
        agent("r", "twitter", 4 * MIN),
        contact("m", "email", 30 * MIN, facts=[("account", "A-1")]),
        contact("x", "twitter", 20 * MIN),  # late: the conversation is recomputed
        agent("d", "email", 2 * HOUR),
        contact("late", "chat", 3 * 24 * HOUR),  # after the window: a new conversation, the old one resolved
    ]


def changes() -> list[list[dict]]:
    """The events of each change of the story, as the stitcher gives them."""
    s, state, out = Stitcher(), None, []
    for c in story():
        state, events = s.apply(state, c, wm=c["occurred_at"])
        out.append(events)
    state, events = s.advance(state, story()[-1]["occurred_at"] + 10 * 24 * HOUR)
    return [*out, events]


def test_events_encoded_a_change_at_a_time_are_the_codecs_bytes():
    codec = SingleObjectCodec()
    encoder = EventEncoder(codec, TOPIC)
    all_changes = changes()
    assert sum(map(len, all_changes)) > 15 and any(len(c) > 3 for c in all_changes)
    for events in all_changes:
        assert encoder.encode(events) == [codec.encode(TOPIC, schemas.CONVERSATION_EVENT, e) for e in events]
    assert encoder.header is not None and encoder.writer is not None  # the fast path was taken


class _ReprCodec:
    def encode(self, topic, subject, record):
        return repr(sorted(record)).encode()


def test_a_codec_that_writes_something_else_writes_every_event():
    codec = _ReprCodec()
    encoder = EventEncoder(codec, TOPIC)
    for events in changes():
        assert encoder.encode(events) == [codec.encode(TOPIC, schemas.CONVERSATION_EVENT, e) for e in events]
    assert encoder.writer is None


def test_an_event_the_writer_does_not_take_is_the_codecs_and_the_others_still_fast():
    codec = SingleObjectCodec()
    encoder = EventEncoder(codec, TOPIC)
    events = max(changes(), key=len)
    odd = copy.deepcopy(events)
    odd[1]["recorded_at"] = datetime.fromtimestamp(odd[1]["recorded_at"] / 1000).astimezone()  # aware: fastavro's
    assert encoder.encode(odd) == [codec.encode(TOPIC, schemas.CONVERSATION_EVENT, e) for e in odd]
    bad = copy.deepcopy(events)
    bad[0]["waiting_on"] = "robot"  # not a symbol: the codec's error
    with pytest.raises(Exception) as raised:
        codec.encode(TOPIC, schemas.CONVERSATION_EVENT, bad[0])
    with pytest.raises(type(raised.value)):
        encoder.encode(bad)


def _full_rows(events: list[dict]) -> list:
    """The outbox entry as states written before ``_pack`` hold it: every row whole."""
    return [events[0]["facts"] if events else [], [[e[k] for k in EVENT_KEYS] for e in events]]


@pytest.mark.parametrize("index", range(7))
def test_the_compact_outbox_gives_back_the_very_events(index):
    events = changes()[index]
    packed = orjson.loads(orjson.dumps(_pack(events)))  # as the table stores it
    assert _unpack(packed) == events
    assert _unpack(orjson.loads(orjson.dumps(_full_rows(events)))) == events  # an older state's rows
    if len(events) > 1:
        assert len(orjson.dumps(packed)) < len(orjson.dumps(_full_rows(events)))


def test_a_redelivery_to_a_state_written_before_the_compact_outbox_resends_the_same_events():
    s = Stitcher()
    state = None
    for c in story()[:3]:
        state, _ = s.apply(state, c)
    last = story()[3]
    state, events = s.apply(state, last)
    old = orjson.loads(orjson.dumps(state))
    key = f"{last['event_id']}:0"
    old["outbox"][key] = _full_rows(events)
    again_state, again = s.apply(old, last)
    assert again == events and again_state is old


def _state_after_the_story() -> tuple[dict, dict, list[dict]]:
    """The state after the story's first four contacts, the fourth contact and its events."""
    s, state = Stitcher(), None
    for c in story()[:3]:
        state, _ = s.apply(state, c)
    last = story()[3]
    state, events = s.apply(state, last)
    return state, last, events


def test_the_outbox_keeps_each_change_as_json_text_that_reading_the_state_leaves_unparsed():
    """Half of a state's bytes are its outbox, which only a redelivery reads: each entry is kept
    as its JSON text, so reading the state (orjson) builds one string per entry instead of every
    value of every event, and a redelivery parses the entry it asks for."""
    state, last, events = _state_after_the_story()
    stored = orjson.loads(orjson.dumps(state))  # as the table keeps it
    assert len(stored["outbox"]) == 4
    assert all(isinstance(entry, str) for entry in stored["outbox"].values())
    entry = stored["outbox"][f"{last['event_id']}:0"]
    assert orjson.loads(entry) == orjson.loads(orjson.dumps(_pack(events)))
    again_state, again = Stitcher().apply(stored, last)
    assert again == events and again_state is stored


def test_a_redelivery_to_a_state_written_with_the_outbox_rows_as_json_values_resends_the_same_events():
    state, last, events = _state_after_the_story()
    old = orjson.loads(orjson.dumps(state))
    key = f"{last['event_id']}:0"
    old["outbox"][key] = orjson.loads(orjson.dumps(_pack(events)))  # the entry as the previous version stored it
    again_state, again = Stitcher().apply(old, last)
    assert again == events and again_state is old


def test_unpacked_events_do_not_share_objects_with_the_state():
    s = Stitcher()
    state, events = s.apply(None, contact("a", "chat", 0, facts=[("order_number", "1")]))
    again_state, again = s.apply(state, contact("a", "chat", 0, facts=[("order_number", "1")]))
    assert again == events
    before = orjson.dumps(again_state)
    for e in again:
        e["facts"].append({"kind": "x", "value": "y", "source": None})
        if e["open_sla"] is not None:
            e["open_sla"]["state"] = "changed"
    assert orjson.dumps(again_state) == before
