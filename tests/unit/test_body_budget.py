"""The local host's budget of request-body bytes held at once (``devhost.http.BodyBudget``)."""
from __future__ import annotations

import asyncio

from devhost.http import BodyBudget


def run(coro):
    return asyncio.run(coro)


def test_requests_that_fit_are_granted_at_once_and_others_wait_in_order():
    async def scenario():
        budget = BodyBudget(100)
        assert budget.take(60) is None and budget.take(40) is None and budget.used == 100
        big, small = budget.take(70), budget.take(10)
        assert big is not None and small is not None and budget.used == 100
        budget.give_back(40)  # 60 held: the 10 would fit, but the 70 came first and waits at the head
        assert not big.done() and not small.done()
        budget.give_back(60)
        assert big.done() and small.done() and budget.used == 80
        late = budget.take(5)  # nothing waits now: granted at once
        assert late is None and budget.used == 85

    run(scenario())


def test_one_request_larger_than_the_budget_goes_through_alone():
    async def scenario():
        budget = BodyBudget(100)
        assert budget.take(500) is None and budget.used == 500
        waiting = budget.take(1)
        budget.give_back(500)
        assert waiting.done() and budget.used == 1
        budget.give_back(1)
        held = budget.take(50)
        assert held is None
        huge = budget.take(500)  # waits until it is alone
        budget.give_back(50)
        assert huge.done() and budget.used == 500

    run(scenario())


def test_a_caller_that_stops_waiting_is_skipped_and_holds_nothing():
    async def scenario():
        budget = BodyBudget(100)
        budget.take(100)
        gone, next_one = budget.take(50), budget.take(50)
        gone.cancel()
        budget.give_back(100)
        assert next_one.done() and budget.used == 50

    run(scenario())


def test_a_chunked_body_takes_room_only_while_it_fits_or_is_alone():
    budget = BodyBudget(100)
    assert budget.try_take(500, held=0) and budget.used == 500  # alone: up to the size limit
    assert budget.try_take(10, held=500) and budget.used == 510
    assert not budget.try_take(1, held=0)  # another request while that one holds the budget
    budget.give_back(510)
    assert budget.try_take(60, held=0) and not budget.try_take(50, held=0) and budget.try_take(40, held=0)
