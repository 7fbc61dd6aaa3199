"""projectors/consent.py: the consent ledger in event time, whatever the arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from projectors.consent import Signal, current, ledger, withdrawn

T = datetime(2026, 11, 22, 9, tzinfo=UTC)
GRANT = Signal("marketing", "email", True, "web_form", T, "e-1", "web_form", "web-form")
WITHDRAW = Signal("marketing", "email", False, "chat", T + timedelta(hours=1), "e-2", "chat", "chat")
PROFILING = Signal("profiling", "any", True, "web_form", T, "e-1", "web_form", "web-form")


@given(st.permutations([GRANT, WITHDRAW, PROFILING, WITHDRAW]))
def test_the_ledger_and_the_state_are_the_same_in_any_arrival_order(arrived):
    assert ledger(arrived) == [GRANT, PROFILING, WITHDRAW] or ledger(arrived) == [PROFILING, GRANT, WITHDRAW]
    assert current(arrived)[("marketing", "email")] == WITHDRAW
    assert withdrawn(arrived) and not withdrawn(arrived, "profiling")


def test_a_late_arriving_older_withdrawal_does_not_override_a_newer_grant():
    old_withdrawal = Signal("marketing", "email", False, "ivr", T - timedelta(days=1), "e-0")
    assert not withdrawn([GRANT, old_withdrawal]) and withdrawn([old_withdrawal])
    assert not withdrawn([]) and not withdrawn([PROFILING])


def test_a_signal_as_json_has_its_evidence_and_event_time():
    assert WITHDRAW.as_json() == {
        "purpose": "marketing",
        "channel": "email",
        "granted": False,
        "source": "chat",
        "signal_at": (T + timedelta(hours=1)).isoformat(),
        "event_id": "e-2",
        "contact_channel": "chat",
        "connector": "chat",
    }


def test_rows_from_the_read_api_with_iso_times_become_signals():
    from projectors.consent import from_row

    row = {
        "purpose": "marketing",
        "channel": None,
        "granted": False,
        "source": "chat",
        "signal_at": (T + timedelta(hours=1)).isoformat(),
        "event_id": "e-2",
        "contact_channel": "chat",
        "connector": "chat",
    }
    assert from_row(row) == Signal("marketing", "any", False, "chat", T + timedelta(hours=1), "e-2", "chat", "chat")
