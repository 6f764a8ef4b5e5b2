"""The local host keeps the platform's trigger semantics (run against a small test app)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from shared.ports.bus import dead_letter_queue
from shared.ports.bus.local import LocalBus
from shared.ports.storage.local import LocalStorage
from shared.ports.storagequeue.local import LocalStorageQueues
from tests.e2e.hostproc import FKEY, MASTER, HostProcess, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("semantics") / "data"
    host = HostProcess(
        data,
        env={"TEST_FAIL_QUEUE": "fails", "TEST_TIMER_SCHEDULE": "*/1 * * * * *", "MLOPS_BUS_MAX_DELIVERY_COUNT": "3",
             "MLOPS_HOST_BLOB_POLL_SECONDS": "0.2", "MLOPS_HOST_QUEUE_POLL_SECONDS": "0.05",
             "MLOPS_HOST_BLOB_RETRY_SECONDS": "0.2"},
        args=["--app", "tests.apps.semantics_app"],
    ).start()
    storage = LocalStorage(data / "blobs")
    bus = LocalBus(data / "bus.sqlite3")
    yield host, storage, bus
    host.stop()


def marks(storage, kind):
    return [storage.get("outbox", b.name).data.decode() for b in storage.list("outbox", f"{kind}/")]


def test_a_blob_runs_once_per_etag_and_again_when_it_changes(env):
    host, storage, _ = env
    storage.put("inbox", "a.txt", b"one")
    wait_for(lambda: any("inbox/a.txt|one" in m for m in marks(storage, "blob")), 20, "first run", host)
    time.sleep(1.5)  # several polls later: still one run for this ETag
    assert [m for m in marks(storage, "blob") if m.startswith("inbox/a.txt")] == ["inbox/a.txt|one"]
    storage.put("inbox", "a.txt", b"two")
    wait_for(lambda: any("inbox/a.txt|two" in m for m in marks(storage, "blob")), 20, "run on the new ETag", host)


def test_a_failing_blob_is_tried_five_times_then_poisoned(env):
    host, storage, bus = env
    storage.put("inbox", "fail-me.txt", b"x")
    queues = LocalStorageQueues(Path(host.env["MLOPS_DATA_DIR"]) / "queues")  # a Storage queue, as on the platform
    poison = wait_for(lambda: queues.peek("webjobs-blobtrigger-poison"), 30, "the poison message", host)
    body = json.loads(poison[0].text)
    assert body["BlobName"] == "fail-me.txt" and body["Tries"] == 5
    assert host.log().count("inbox/fail-me.txt") >= 5
    time.sleep(1)
    assert len(queues.peek("webjobs-blobtrigger-poison")) == 1  # not tried again
    assert bus.peek("webjobs-blobtrigger-poison") == []


def test_a_failing_message_is_dead_lettered_after_max_delivery(env):
    host, _, bus = env
    from shared.ports.bus import OutgoingMessage

    bus.send("fails", OutgoingMessage(body=b"payload", message_id="doomed"))
    [dead] = wait_for(lambda: bus.peek(dead_letter_queue("fails")), 30, "the dead letter", host)
    assert dead.message_id == "doomed" and dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == 3


def test_a_queue_message_is_delivered_with_its_properties(env):
    host, storage, bus = env
    from shared.ports.bus import OutgoingMessage

    bus.send("echo", OutgoingMessage(body=b"hello", message_id="m-42"))
    found = wait_for(lambda: [json.loads(m) for m in marks(storage, "queue")], 20, "the echo", host)
    assert found[0] == {"body": "hello", "id": "m-42", "count": 1}
    assert bus.peek("echo") == []  # completed


def test_the_timer_fires_on_its_ncrontab_schedule(env):
    host, storage, _ = env
    start = len(marks(storage, "timer"))
    time.sleep(3.2)
    assert 2 <= len(marks(storage, "timer")) - start <= 5


def test_http_routes_keys_and_errors(env):
    host, storage, _ = env
    url = host.url
    r = httpx.get(f"{url}/api/open/abc?q=1")
    assert r.status_code == 200 and r.json() == {"item": "abc", "q": "1"}
    assert httpx.post(f"{url}/api/keyed", content=b"x").status_code == 401
    assert httpx.post(f"{url}/api/keyed", content=b"x", headers={"x-functions-key": "wrong"}).status_code == 401
    r = httpx.post(f"{url}/api/keyed", content=b"body", headers={"x-functions-key": FKEY})
    assert r.status_code == 201 and r.content == b"body"
    assert httpx.post(f"{url}/api/keyed?code={FKEY}", content=b"x").status_code == 201
    assert httpx.post(f"{url}/api/keyed", content=b"x", headers={"x-functions-key": MASTER}).status_code == 201
    assert httpx.get(f"{url}/api/admin-only", headers={"x-functions-key": FKEY}).status_code == 401
    assert httpx.get(f"{url}/api/admin-only", headers={"x-functions-key": MASTER}).status_code == 200
    assert httpx.get(f"{url}/api/keyed", headers={"x-functions-key": FKEY}).status_code == 405
    assert httpx.get(f"{url}/api/nothing").status_code == 404
    assert httpx.get(f"{url}/elsewhere").status_code == 404
    r = httpx.get(f"{url}/api/crash")
    assert r.status_code == 500 and "crashes failed" in r.json()["error"]["message"]


def test_admin_endpoint_runs_a_non_http_function_now(env):
    host, storage, _ = env
    assert httpx.post(f"{host.url}/admin/functions/echo_queue", json={"input": "now"}).status_code == 401
    r = httpx.post(f"{host.url}/admin/functions/echo_queue", json={"input": "now"}, headers={"x-functions-key": MASTER})
    assert r.status_code == 202
    wait_for(lambda: any(json.loads(m)["body"] == "now" for m in marks(storage, "queue")), 10, "the admin run", host)
    storage.put("inbox", "manual.txt", b"m")
    r = httpx.post(f"{host.url}/admin/functions/inbox", json={"input": "inbox/manual.txt"},
                   headers={"x-functions-key": MASTER})
    assert r.status_code == 202
    nope = httpx.post(f"{host.url}/admin/functions/nope", json={}, headers={"x-functions-key": MASTER})
    assert nope.status_code == 404
    twice = httpx.post(f"{host.url}/admin/functions/echo_queue", content=b'{"input": "a", "input": "b"}',
                       headers={"x-functions-key": MASTER})
    assert twice.status_code == 400 and "key 'input' is given twice" in twice.json()["error"]["message"]


def test_each_invocation_is_logged_in_one_line(env):
    host, _, _ = env
    lines = [line for line in host.log().splitlines() if "httpTrigger" in line and "open_route" in line]
    assert lines and "ms" in lines[0] and "Succeeded" in lines[0]
