"""The local host's budget of request-body bytes held at once (``devhost.http.BodyBudget``)."""
from __future__ import annotations

import asyncio
import json

import azure.functions as func

from devhost.http import BodyBudget, HttpApp, HttpFunction


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


def test_a_request_that_waits_longer_than_a_body_may_take_gets_503_and_the_budget_is_whole_again():
    """Through the host's ASGI application: a slow function holds the whole budget; a second
    request waits unread, then gets the JSON 503 with Retry-After; after both, nothing is held."""

    async def slow(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(1.0)
        return func.HttpResponse(b"{}", mimetype="application/json")

    async def scenario():
        fn = HttpFunction("slow", "req", "slow", ("POST",), "ANONYMOUS", slow)
        app = HttpApp([fn], invoker=None, master_key="m", function_keys=(), log_requests=False,
                      body_timeout_seconds=0.2, body_budget_bytes=100)

        async def call(size: int) -> tuple[int, dict[bytes, bytes], bytes]:
            scope = {"type": "http", "method": "POST", "path": "/api/slow", "query_string": b"",
                     "headers": [(b"content-length", str(size).encode())]}
            read = asyncio.Event()

            async def receive():
                read.set()
                return {"type": "http.request", "body": b" " * size, "more_body": False}

            sent = []

            async def send(message):
                sent.append(message)

            await app(scope, receive, send)
            assert read.is_set() == (sent[0]["status"] != 503)  # a refused body was never read
            return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

        first = asyncio.create_task(call(100))
        await asyncio.sleep(0.05)
        status, headers, body = await call(10)
        assert status == 503 and headers[b"retry-after"] and json.loads(body)["error"]["code"] == "TRANSIENT"
        assert (await first)[0] == 200
        assert app.body_budget.used == 0 and not app.body_budget._waiting
        app.executor.shutdown()

    run(scenario())
