"""Export rows, the event-time window, lag arithmetic and build names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projectors.export import export_row, in_window, write_rows
from projectors.lag import summarize
from projectors.replay import build_schema_name

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_the_window_is_half_open_on_event_time():
    assert in_window(T0, T0, T0 + timedelta(hours=1))
    assert not in_window(T0 + timedelta(hours=1), T0, T0 + timedelta(hours=1))
    assert in_window(T0, None, None)
    assert not in_window(None, None, None)


def test_an_export_row_lifts_the_envelope_and_keeps_the_whole_record():
    rec = {
        "event_id": "e1",
        "event_type": "opened",
        "occurred_at": T0,
        "recorded_at": T0,
        "customer_id": "c1",
        "conversation_id": "k",
    }
    row = export_row("conversations.v1", 2, 9, "threadline.conversation.ConversationEvent", rec)
    assert (row["topic"], row["partition"], row["offset"], row["customer_id"]) == ("conversations.v1", 2, 9, "c1")
    assert row["channel"] is None and row["record"] is rec


def test_jsonl_is_one_json_object_per_line(tmp_path):
    import json

    rec = {"event_id": "e1", "occurred_at": T0}
    write_rows([export_row("t", 0, 0, "s", rec)], "jsonl", tmp_path / "x.jsonl")
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["record"] == {"event_id": "e1", "occurred_at": T0.isoformat()}


def test_an_unknown_format_is_refused(tmp_path):
    from threadline.errors import ConfigError

    with pytest.raises(ConfigError):
        write_rows([], "csv", tmp_path / "x.csv")


def test_lag_counts_events_behind_and_the_age_of_the_oldest_unprojected_event():
    stored = {("t", 0): 10, ("t", 1): 5}
    ends = {("t", 0): 10, ("t", 1): 8, ("t", 2): 2}
    oldest = {("t", 1): T0 - timedelta(seconds=3), ("t", 2): T0 - timedelta(seconds=7)}
    lag = summarize("support", stored, ends, oldest, T0)
    assert (lag.events, lag.seconds, lag.partitions_behind) == (5, 7.0, 2)


def test_a_caught_up_projector_has_no_lag():
    lag = summarize("support", {("t", 0): 4}, {("t", 0): 4}, {}, T0)
    assert (lag.events, lag.seconds, lag.partitions_behind) == (0, 0.0, 0)


def test_build_schemas_are_named_after_the_live_one():
    assert build_schema_name("support", "20261122090000abcdef", None) == "support__b20261122090000abcdef"
    assert build_schema_name("sales", "20261122090000abcdef", T0) == "sales_asof_20261122090000_abcdef"


def test_an_export_for_a_purpose_leaves_out_the_customers_whose_latest_signal_withdrew_it():
    from projectors.export import consent_signals, withdrawn_customers
    from schemas.privacy import CONTACT_FULLNAME

    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def contact(eid, cid, minutes, *consent):
        return {
            "event_id": eid,
            "customer_id": cid,
            "occurred_at": t0 + timedelta(minutes=minutes),
            "consent": [{"purpose": p, "channel": ch, "granted": g, "source": None} for p, ch, g in consent],
        }

    records = [
        contact("a1", "anna", 10, ("marketing", "email", True)),
        contact("a2", "anna", 20, ("marketing", "sms", False)),  # later: withdrawn on every channel
        contact("b2", "bart", 5, ("marketing", "email", True)),  # a late-arriving older withdrawal does not win
        contact("b1", "bart", 1, ("marketing", "email", False)),
        contact("c1", "cleo", 1, ("support", None, False)),  # another purpose
    ]
    signals = [s for r in records for s in consent_signals(CONTACT_FULLNAME, r)]
    assert consent_signals("threadline.identity.IdentityEvent", records[1]) == []
    assert withdrawn_customers(signals, "marketing") == {"anna"}
    assert withdrawn_customers(signals, "support") == {"cleo"}


def test_an_unknown_purpose_is_refused(tmp_path):
    from projectors.export import export
    from threadline.errors import ConfigError

    with pytest.raises(ConfigError, match="--purpose"):
        export(None, [], None, None, "jsonl", tmp_path / "x.jsonl", purpose="spam")
