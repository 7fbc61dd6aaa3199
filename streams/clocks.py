"""Which customers' clocks are due: watermarks per partition and a due index (pure, no I/O).

The conversations stage owns one ``ClockScheduler``. It tells the scheduler what it saw (a
record's event time on a partition, a customer's next deadline after a change) and asks it,
between batches, which customers must be advanced to which watermark.

* A partition's watermark is the latest event time seen on it, less the allowed lateness
  (``THREADLINE_SLA_TIMER_GRACE_SECONDS``). While the partition is idle (no record for
  ``THREADLINE_STREAMS_IDLE_SECONDS``) it follows the wall clock instead, so clocks fall due on a
  quiet partition too. Idle time counts from the partition's last record or, before its first
  one, from when this worker was given it: a partition just assigned (a fresh worker replaying
  from offset 0, a restart, a rebalance) is not idle yet, so the records on their way to it are
  placed in their own event time, not behind a wall-clock watermark that would breach every
  clock of the past on arrival.
* With a hold (``THREADLINE_STREAMS_IDLE_HOLD_SECONDS``, ``hold_seconds`` > 0; 0, the default,
  turns it off), an idle partition's watermark first advances from its latest event time at the
  wall clock's pace (the time it has been idle), never past the wall clock, and follows the wall
  clock only once the partition has been idle for the hold. For contacts that arrive as they
  happen that is the wall clock, as without a hold; for contacts that arrive late (a story of
  yesterday told at live pace, a backlog), a clock of the past is breached only if nothing came
  for the hold: the contact that would take it away (a DM that merges the customer, a reply) has
  the hold to arrive, as it has in a replay, where no partition is idle.
* A customer is due when its next deadline (a clock's due time, a conversation's window end) is
  behind its partition's watermark and the worker owns that partition. It is handed out once per
  deadline: the stage advances it and reports its new deadline (``remember``).
* Partitions newly assigned (a rebalance, a restart) are indexed from the recovered states: their
  customers' deadlines and the watermarks the states carry.
* The deadlines are kept in a heap per partition as well, so a look at the clocks visits the
  customers whose deadline its watermark passed and not every customer with a clock (a timer that
  wakes every second would otherwise walk the whole index, however few are due). An entry whose
  customer has another deadline since is dropped when it comes up; the heap is rebuilt from the
  index when such entries outnumber the live ones.

Time comes in as arguments (``now_ms`` wall clock, ``mono`` monotonic seconds), so the tests
drive it without sleeping.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class ClockScheduler:
    lateness_ms: int
    idle_seconds: float
    hold_seconds: float = 0.0  # 0: an idle partition follows the wall clock at once
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> watermark (ms, event time)
    event_marks: dict[int, int] = field(default_factory=dict)  # partition -> latest event time less the lateness
    idle_since: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time of its last record
    due_index: dict[str, tuple[int, int]] = field(default_factory=dict)  # customer -> (next deadline ms, partition)
    ticked: dict[str, int] = field(default_factory=dict)  # customer -> the deadline it was handed out for
    indexed_for: set[int] = field(default_factory=set)  # partitions whose customers are indexed
    heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # partition -> (deadline, customer)

    def see(self, partition: int, event_ms: int | None, mono: float) -> int | None:
        """A record arrived on ``partition`` (``event_ms``: its event time, None for a command):
        the partition's watermark after it."""
        self.idle_since[partition] = mono
        if event_ms is not None:
            wm = event_ms - self.lateness_ms
            if wm > self.event_marks.get(partition, wm - 1):
                self.event_marks[partition] = wm
            if wm > self.watermarks.get(partition, wm - 1):
                self.watermarks[partition] = wm
        return self.watermarks.get(partition)

    def idle_watermark(self, partition: int, idle: float, now_ms: int) -> int | None:
        """Where wall time takes the watermark of ``partition``, idle for ``idle`` seconds: the wall
        clock less the lateness; within the hold, its latest event time advanced by the idle time,
        not past the wall clock (None: no event time to advance yet)."""
        wall = now_ms - self.lateness_ms
        if idle >= self.hold_seconds:
            return wall
        base = self.event_marks.get(partition, self.watermarks.get(partition))
        return None if base is None else min(wall, base + int(idle * 1000))

    def watermark(self, partition: int) -> int | None:
        return self.watermarks.get(partition)

    def remember(self, customer_id: str, deadline: int | None, partition: int) -> None:
        """A customer's next deadline after a change (None: nothing can fall due)."""
        if deadline is None:
            self.due_index.pop(customer_id, None)
            self.ticked.pop(customer_id, None)
        else:
            if self.due_index.get(customer_id) == (deadline, partition):
                return  # its entry is in the heap still, or it was handed out for that deadline
            self.due_index[customer_id] = (deadline, partition)
            heap = self.heaps.setdefault(partition, [])
            heapq.heappush(heap, (deadline, customer_id))
            if len(heap) > 2 * len(self.due_index) + 1024:
                self._rebuild()

    def _rebuild(self) -> None:
        """The heaps again from the index (entries of deadlines that changed dropped)."""
        heaps: dict[int, list[tuple[int, str]]] = {}
        for cid, (deadline, partition) in self.due_index.items():
            if self.ticked.get(cid) != deadline:
                heaps.setdefault(partition, []).append((deadline, cid))
        for heap in heaps.values():
            heapq.heapify(heap)
        self.heaps = heaps

    def index(
        self,
        active: set[int],
        states: Callable[[], Iterable[tuple[str, dict]]],
        deadline_of: Callable[[dict], int | None],
    ) -> None:
        """Index the customers of partitions assigned since the last call (``states``: every
        (customer, state) of the table, read only when there are such partitions); forget the
        partitions given away."""
        fresh = self.fresh(active)
        if fresh:
            for cid, state in states():
                if isinstance(state, dict) and state.get("p") in fresh:
                    self._index_one(cid, state, deadline_of)
            self.indexed_for |= fresh

    def fresh(self, active: set[int]) -> set[int]:
        """The partitions of ``active`` assigned since they were last indexed (``index_partition``
        each); the partitions given away are forgotten."""
        for p in self.indexed_for - active:  # given away: idle counts afresh if it comes back
            self.idle_since.pop(p, None)
        self.indexed_for &= active
        return active - self.indexed_for

    def index_partition(
        self, partition: int, states: Iterable[tuple[str, dict]], deadline_of: Callable[[dict], int | None]
    ) -> int:
        """Index the customers of one partition newly assigned (``states``: its (customer, state)
        pairs; those of other partitions are skipped); the number read."""
        n = 0
        for cid, state in states:
            n += 1
            if isinstance(state, dict) and state.get("p") == partition:
                self._index_one(cid, state, deadline_of)
        self.indexed_for.add(partition)
        return n

    def _index_one(self, cid: str, state: dict, deadline_of: Callable[[dict], int | None]) -> None:
        p = state["p"]
        self.remember(cid, deadline_of(state), p)
        if state.get("wm") is not None:
            self.watermarks[p] = max(self.watermarks.get(p, state["wm"]), state["wm"])

    def due(self, active: set[int], now_ms: int, mono: float) -> list[tuple[str, int, int]]:
        """(customer, watermark, partition) of every customer of an owned partition whose deadline
        the watermark passed and that was not handed out for that deadline yet; idle partitions'
        watermarks follow the wall clock first."""
        for p in active:
            idle = mono - self.idle_since.setdefault(p, mono)
            if idle >= self.idle_seconds:
                wm = self.idle_watermark(p, idle, now_ms)
                if wm is not None and wm > self.watermarks.get(p, wm - 1):
                    self.watermarks[p] = wm
        out = []
        index, ticked = self.due_index, self.ticked
        for p in active:
            heap, wm = self.heaps.get(p), self.watermarks.get(p)
            if not heap or wm is None:
                continue
            while heap and heap[0][0] < wm:
                deadline, cid = heapq.heappop(heap)
                if index.get(cid) != (deadline, p) or ticked.get(cid) == deadline:
                    continue  # another deadline since, or handed out for this one already
                ticked[cid] = deadline
                out.append((cid, wm, p))
        return sorted(out)
