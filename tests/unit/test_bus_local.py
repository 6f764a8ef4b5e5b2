"""The embedded bus keeps Service Bus semantics: peek-lock, expiry, delivery count, dead letters."""
from __future__ import annotations

import time

import pytest

from shared.ports.bus import OutgoingMessage, dead_letter_queue
from shared.ports.bus.local import LocalBus, MessageLockLost


def msg(i: int = 1, **props) -> OutgoingMessage:
    return OutgoingMessage(body=f'{{"n": {i}}}'.encode(), message_id=f"m{i}", correlation_id="c",
                           application_properties=props)


@pytest.fixture
def bus(tmp_path) -> LocalBus:
    return LocalBus(tmp_path / "bus.sqlite3", max_delivery_count=3, lock_seconds=30)


def test_send_receive_complete_round_trip(bus):
    bus.send("q", msg(1, event="trained"))
    [m] = bus.receive("q")
    assert m.body == b'{"n": 1}' and m.message_id == "m1" and m.correlation_id == "c"
    assert m.application_properties == {"event": "trained"}
    assert m.delivery_count == 1
    bus.complete(m)
    assert bus.receive("q") == []


def test_a_locked_message_is_invisible_to_other_receivers(bus):
    bus.send("q", msg(1))
    assert len(bus.receive("q")) == 1
    assert bus.receive("q") == []


def test_messages_come_in_order_and_queues_are_separate(bus):
    for i in range(3):
        bus.send("a", msg(i))
    bus.send("b", msg(9))
    got = bus.receive("a", max_messages=10)
    assert [m.message_id for m in got] == ["m0", "m1", "m2"]
    assert [m.message_id for m in bus.receive("b")] == ["m9"]


def test_abandon_redelivers_with_a_higher_delivery_count(bus):
    bus.send("q", msg(1))
    [m] = bus.receive("q")
    bus.abandon(m)
    [again] = bus.receive("q")
    assert again.delivery_count == 2


def test_expired_lock_redelivers_and_stale_settlement_fails(tmp_path):
    bus = LocalBus(tmp_path / "b.sqlite3", max_delivery_count=5, lock_seconds=0.2)
    bus.send("q", msg(1))
    [m] = bus.receive("q")
    time.sleep(0.3)
    [again] = bus.receive("q")
    assert again.delivery_count == 2
    with pytest.raises(MessageLockLost):
        bus.complete(m)
    bus.complete(again)


def test_max_delivery_count_moves_the_message_to_the_dead_letter_queue(bus):
    bus.send("q", msg(1))
    for _ in range(3):
        [m] = bus.receive("q")
        bus.abandon(m)
    assert bus.receive("q") == []
    [dead] = bus.receive(dead_letter_queue("q"))
    assert dead.message_id == "m1"
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


def test_expired_lock_at_the_last_delivery_dead_letters(tmp_path):
    bus = LocalBus(tmp_path / "b.sqlite3", max_delivery_count=1, lock_seconds=0.1)
    bus.send("q", msg(1))
    bus.receive("q")
    time.sleep(0.2)
    assert bus.receive("q") == []
    assert [m.message_id for m in bus.peek(dead_letter_queue("q"))] == ["m1"]


def test_explicit_dead_letter_keeps_reason_and_description(bus):
    bus.send("q", msg(1))
    [m] = bus.receive("q")
    bus.dead_letter(m, "BadMessage", "not JSON")
    [dead] = bus.peek(dead_letter_queue("q"))
    assert (dead.dead_letter_reason, dead.dead_letter_description) == ("BadMessage", "not JSON")


def test_messages_survive_a_restart(tmp_path):
    path = tmp_path / "bus.sqlite3"
    LocalBus(path).send("q", msg(7))
    [m] = LocalBus(path).receive("q")
    assert m.message_id == "m7"


def test_two_buses_on_one_file_never_lock_the_same_message(tmp_path):
    path = tmp_path / "bus.sqlite3"
    a, b = LocalBus(path), LocalBus(path)
    for i in range(20):
        a.send("q", msg(i))
    got = []
    while True:
        batch = a.receive("q", max_messages=3) + b.receive("q", max_messages=3)
        if not batch:
            break
        got += [m.message_id for m in batch]
    assert sorted(got) == sorted(f"m{i}" for i in range(20))
