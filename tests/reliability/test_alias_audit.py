"""An alias move and its audit entry: both or neither, visibly. Failures are injected at the
storage port between the two writes (and the process is SIGKILLed there)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from models.breast_cancer_data import generate as cancer
from shared.core.errors import TransientError
from shared.ports.storage.local import LocalStorage
from shared.registry.store import PRODUCTION, Registry
from tests.conftest import ROOT, to_csv
from tests.helpers import drain, drop


class FailingWrites:
    """The storage port, with writes whose name contains ``fail_on`` refused as a full disk would."""

    def __init__(self, inner: LocalStorage) -> None:
        self.inner = inner
        self.fail_on: str | None = None

    def put(self, container, name, data, **kw):
        if self.fail_on and self.fail_on in name:
            raise TransientError(f"storage unavailable: {container}/{name}: No space left on device")
        return self.inner.put(container, name, data, **kw)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


@pytest.fixture
def two_versions(ctx):
    """breast_cancer with versions 1 and 2 committed, production on the winner."""
    drop(ctx, "breast_cancer", "a.csv", to_csv(cancer()))
    drop(ctx, "breast_cancer", "b.csv", to_csv(cancer().sample(frac=0.95, random_state=1)))
    drain(ctx)
    assert ctx.registry.versions("breast_cancer") == [1, 2]
    return ctx


def audit_names(storage) -> list[str]:
    return [b.name for b in storage.list("registry", "breast_cancer/audit/")]


def moves(entries) -> list[tuple[str, int]]:
    return [(e["event"], e["version"]) for e in entries if e["event"] in ("set_alias", "rollback", "promote")]


def test_a_failed_audit_write_leaves_the_move_visible_and_recorded(two_versions):
    storage = FailingWrites(two_versions.storage)
    registry = Registry(storage)
    current = registry.alias("breast_cancer", PRODUCTION)
    target = 2 if current.version == 1 else 1
    before = moves(registry.audit_log("breast_cancer"))

    storage.fail_on = "/audit/"
    moved = registry.move_alias("breast_cancer", PRODUCTION, target, expected=current, event="rollback",
                                reason="injected audit failure", actor="test")
    assert registry.alias("breast_cancer").version == target == moved.version
    # While storage still refuses the entry, the log shows it from the alias record.
    log = registry.audit_log("breast_cancer")
    assert moves(log) == [*before, ("rollback", target)] and log[-1]["pending"] is True
    assert log[-1]["reason"] == "injected audit failure"

    storage.fail_on = None  # space is back: the next reader writes the entry
    log = registry.audit_log("breast_cancer")
    assert moves(log) == [*before, ("rollback", target)] and "pending" not in log[-1]
    stored = json.loads(storage.get("registry", audit_names(storage)[-1]).data)
    assert (stored["event"], stored["version"], stored["reason"]) == ("rollback", target, "injected audit failure")


def test_the_next_move_writes_a_missing_entry_first(two_versions):
    storage = FailingWrites(two_versions.storage)
    registry = Registry(storage)
    first = registry.alias("breast_cancer", PRODUCTION)
    other = 2 if first.version == 1 else 1
    storage.fail_on = "/audit/"
    moved = registry.move_alias("breast_cancer", PRODUCTION, other, expected=first, event="rollback",
                                reason="one", actor="test")
    storage.fail_on = None
    registry.move_alias("breast_cancer", PRODUCTION, first.version, expected=moved, event="set_alias",
                        reason="two", actor="test")
    raw = [json.loads(storage.get("registry", n).data) for n in audit_names(storage)]
    assert [(e["reason"], e["version"]) for e in raw[-2:]] == [("one", other), ("two", first.version)]


def test_a_failed_alias_write_records_nothing(two_versions):
    storage = FailingWrites(two_versions.storage)
    registry = Registry(storage)
    current = registry.alias("breast_cancer", PRODUCTION)
    entries = audit_names(storage)
    storage.fail_on = "/aliases/"
    with pytest.raises(TransientError):
        registry.move_alias("breast_cancer", PRODUCTION, 2 if current.version == 1 else 1, expected=current,
                            event="rollback", reason="never happened", actor="test")
    storage.fail_on = None
    assert registry.alias("breast_cancer").version == current.version
    assert audit_names(storage) == entries
    assert all(e.get("reason") != "never happened" for e in registry.audit_log("breast_cancer"))


MOVE = """
import sys
from shared.registry.store import PRODUCTION, Registry
from shared.ports.storage.local import LocalStorage
registry = Registry(LocalStorage(sys.argv[1]))
current = registry.alias("breast_cancer", PRODUCTION)
registry.move_alias("breast_cancer", PRODUCTION, int(sys.argv[2]), expected=current, event="rollback",
                    reason="killed between the writes", actor="test")
"""


def test_killed_between_the_alias_and_its_entry_both_are_found(two_versions):
    storage = two_versions.storage
    registry = Registry(storage)
    current = registry.alias("breast_cancer", PRODUCTION)
    target = 2 if current.version == 1 else 1
    entries = audit_names(storage)
    root = str(two_versions.settings.data_dir / "blobs")
    proc = subprocess.run([sys.executable, "-c", MOVE, root, str(target)], cwd=ROOT, capture_output=True,
                          env={**os.environ, "MLOPS_FAULT_KILL_AT": "registry:after_alias_before_audit"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert registry.alias("breast_cancer").version == target  # the move happened...
    assert audit_names(storage) == entries  # ...and its entry was not written: now the reader
    log = registry.audit_log("breast_cancer")
    assert (log[-1]["version"], log[-1]["reason"]) == (target, "killed between the writes")
    assert len(audit_names(storage)) == len(entries) + 1
