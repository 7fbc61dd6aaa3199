"""Helpers of the tests that run projectors as their own processes."""

from __future__ import annotations

import signal
import subprocess
import time


def stored(pg, name) -> dict:
    """The tracking rows of projector ``name``: {(topic, partition): next offset}."""
    return {
        (t, p): o
        for t, p, o in pg.execute(
            "select topic, partition, next_offset from projection_offsets where projector = %s", (name,)
        ).fetchall()
    }


def filled_ends(settings, topics: list[str]) -> dict:
    """The end offsets of the partitions of ``topics`` that hold records: {(topic, partition): end},
    what ``stored`` reaches once the projector has read them all."""
    from projectors.replay import end_offsets

    return {k: v for k, v in end_offsets(settings, topics).items() if v}


def contact_rows(pg, ids: list[str]) -> list[tuple[str, int]]:
    """(event id, rows) of skeleton.contacts for the contacts ``ids`` that have any."""
    return pg.execute(
        "select event_id::text, count(*) from skeleton.contacts where event_id = any(%s::uuid[]) group by event_id",
        (ids,),
    ).fetchall()


def wait(condition, what: str, proc=None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"projector exited with {proc.returncode} while waiting: {what}"
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.1)


def waiting_on_a_lock(pg, application_name: str) -> bool:
    """Whether a session of ``application_name`` waits for a lock (a row lock, an advisory lock)."""
    return (
        pg.execute(
            "select count(*) from pg_stat_activity where application_name = %s and wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()[0]
        == 1
    )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
