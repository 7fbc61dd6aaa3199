"""The freshness bench's pollers: how many requests a sweep costs with a backlog, and when a
contact counts as seen (threadline/tools/freshness.py)."""

from __future__ import annotations

import asyncio

from threadline.tools.freshness import EachPoller, QueryPoller


class FakeReadApi:
    """Which contacts the read model holds; counts the questions asked of it."""

    def __init__(self, visible: set[str]):
        self.held = set(visible)
        self.queries: list[int] = []  # ids asked per visibility query
        self.gets: list[str] = []

    async def visible(self, ids: list[str]) -> set[str]:
        self.queries.append(len(ids))
        return {i for i in ids if i in self.held}

    async def confirm(self, event_id: str) -> bool:
        self.gets.append(event_id)
        return event_id in self.held


def sweep(poller, pending: dict[str, float], seen: dict[str, float]) -> None:
    asyncio.run(poller.sweep(pending, seen))


def test_the_query_poller_asks_once_per_sweep_whatever_the_backlog():
    backlog = {f"c{i}": 0.0 for i in range(5000)}
    api = FakeReadApi(visible={"c3", "c4999"})
    poller = QueryPoller(api.visible, api.confirm)
    seen: dict[str, float] = {}
    sweep(poller, backlog, seen)
    assert api.queries == [5000]  # one question naming every pending contact
    assert sorted(api.gets) == ["c3", "c4999"]  # a GET only for what the read model holds
    assert set(seen) == {"c3", "c4999"} and len(backlog) == 4998
    assert poller.requests == 3


def test_the_query_poller_costs_the_same_for_ten_pending_as_for_ten_thousand():
    def requests(pending_count: int) -> int:
        api = FakeReadApi(visible=set())
        poller = QueryPoller(api.visible, api.confirm)
        pending = {f"c{i}": 0.0 for i in range(pending_count)}
        for _ in range(20):
            sweep(poller, pending, {})
        return poller.requests

    assert requests(10) == requests(10_000) == 20


def test_a_contact_is_seen_only_when_the_read_api_answers_it():
    api = FakeReadApi(visible={"late"})
    api_answers = set()  # the row is there, the read API does not answer it yet

    async def confirm(event_id: str) -> bool:
        api.gets.append(event_id)
        return event_id in api_answers

    poller = QueryPoller(api.visible, confirm)
    pending, seen = {"late": 1.0}, {}
    sweep(poller, pending, seen)
    assert seen == {} and pending == {"late": 1.0}  # asked again next sweep
    api_answers.add("late")
    sweep(poller, pending, seen)
    assert list(seen) == ["late"] and pending == {}
    assert seen["late"] >= 1.0


def test_the_poller_of_before_grows_with_the_backlog():
    """Why it was replaced: its GETs per sweep follow the pending contacts (up to 64)."""

    def requests(pending_count: int) -> int:
        api = FakeReadApi(visible=set())
        poller = EachPoller(api.confirm)
        sweep(poller, {f"c{i}": 0.0 for i in range(pending_count)}, {})
        return poller.requests

    assert requests(1) == 1 and requests(10) == 10 and requests(1000) == 64
