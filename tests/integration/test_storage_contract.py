"""One contract, two backends: the embedded filesystem and Azure Blob (on Azurite)."""
from __future__ import annotations

import threading
import uuid

import pytest

from shared.core.errors import AlreadyExists, InvalidName, NotFound, PreconditionFailed


@pytest.fixture
def container():
    return f"c{uuid.uuid4().hex[:12]}"


def test_put_then_get_returns_the_bytes_and_etag(storage, container):
    info = storage.put(container, "a/b.txt", b"hello")
    blob = storage.get(container, "a/b.txt")
    assert blob.data == b"hello"
    assert blob.info.etag == info.etag
    assert blob.info.size == 5


def test_get_of_a_missing_blob_raises_not_found(storage, container):
    with pytest.raises(NotFound):
        storage.get(container, "missing")
    assert storage.head(container, "missing") is None


def test_every_write_changes_the_etag(storage, container):
    first = storage.put(container, "x", b"same")
    second = storage.put(container, "x", b"same")
    assert first.etag != second.etag


def test_create_only_refuses_an_existing_blob_and_keeps_it(storage, container):
    storage.put(container, "claim", b"one", create_only=True)
    with pytest.raises(AlreadyExists):
        storage.put(container, "claim", b"two", create_only=True)
    assert storage.get(container, "claim").data == b"one"


def test_if_match_writes_only_over_the_expected_etag(storage, container):
    first = storage.put(container, "alias", b"v1")
    second = storage.put(container, "alias", b"v2", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        storage.put(container, "alias", b"v3", if_match=first.etag)
    assert storage.get(container, "alias").data == b"v2"
    assert storage.get(container, "alias").info.etag == second.etag


def test_if_match_on_a_missing_blob_fails(storage, container):
    with pytest.raises(PreconditionFailed):
        storage.put(container, "nothing", b"v", if_match='"0x1"')


def test_a_conditional_read_returns_none_while_unchanged(storage, container):
    info = storage.put(container, "alias", b"v1")
    assert storage.get_if_changed(container, "alias", info.etag) is None
    storage.put(container, "alias", b"v2")
    changed = storage.get_if_changed(container, "alias", info.etag)
    assert changed is not None and changed.data == b"v2"


def test_list_by_prefix_is_sorted_and_exact(storage, container):
    for name in ["m/b/2", "m/a/1", "m/a/3", "n/a/1", "m/ab"]:
        storage.put(container, name, b".")
    assert [b.name for b in storage.list(container, "m/a/")] == ["m/a/1", "m/a/3"]
    assert [b.name for b in storage.list(container, "m/a")] == ["m/a/1", "m/a/3", "m/ab"]
    assert len(storage.list(container)) == 5
    assert storage.list(f"{container}x") == []


def test_delete_removes_and_reports(storage, container):
    info = storage.put(container, "d", b".")
    with pytest.raises(PreconditionFailed):
        storage.delete(container, "d", if_match='"0xdead"')
    assert storage.delete(container, "d", if_match=info.etag) is True
    assert storage.delete(container, "d") is False
    assert storage.head(container, "d") is None


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs", "a//b", "a\\b", ""])
def test_names_that_could_escape_are_refused(storage, container, name):
    with pytest.raises(InvalidName):
        storage.put(container, name, b".")


def test_concurrent_create_only_claims_have_one_winner(storage, container):
    winners = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            storage.put(container, "versions/1/claim", str(i).encode(), create_only=True)
            winners.append(i)
        except AlreadyExists:
            pass

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert storage.get(container, "versions/1/claim").data == str(winners[0]).encode()


def test_concurrent_if_match_updates_never_lose_one(storage, container):
    storage.put(container, "counter", b"0")

    def bump() -> None:
        for _ in range(10):
            while True:
                blob = storage.get(container, "counter")
                try:
                    storage.put(container, "counter", str(int(blob.data) + 1).encode(), if_match=blob.info.etag)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.get(container, "counter").data == b"40"


def test_listing_and_reading_report_the_same_etag(storage, container):
    info = storage.put(container, "e", b".")
    [listed] = storage.list(container)
    assert listed.etag == info.etag == storage.get(container, "e").info.etag == storage.head(container, "e").etag
