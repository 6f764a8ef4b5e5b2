"""The model registry: immutable versions, aliases moved with ETags, an append-only audit.

Layout in the ``registry`` container (constants below)::

    <model>/versions/<n>/claim.json      create-only: allocates version n to one run
    <model>/versions/<n>/model.onnx      immutable once written
    <model>/versions/<n>/manifest.json   written last: its presence commits the version
    <model>/runs/<run_id>.json           which version a run received (idempotency index)
    <model>/aliases/<alias>.json         production, ...; updated with If-Match
    <model>/audit/<timestamp>-<event>.json

Versions are visible only once their manifest exists, so a crash mid-write never exposes
half a version; the manifest records the SHA-256 of the model file, checked on every load.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from shared.core import faults, names
from shared.core.errors import AlreadyExists, IntegrityError, NotFound, PreconditionFailed
from shared.core.records import AuditEntry, Decision, Manifest
from shared.ports.storage import Storage
from shared.registry.jsonio import get_json, put_json

log = logging.getLogger("mlops.registry")

CONTAINER = "registry"
MODEL_FILE = "model.onnx"
MANIFEST = "manifest.json"
CLAIM = "claim.json"
PRODUCTION = "production"
_VERSION_DIR = re.compile(r"^[^/]+/versions/(\d+)/")


def _utc_stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


@dataclass(frozen=True)
class Alias:
    """Where an alias points, with the ETag to move it from."""

    model: str
    alias: str
    version: int
    etag: str
    record: dict[str, Any]


class Registry:
    """Versions, aliases and audit for every model, on top of the storage port."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # -- paths ---------------------------------------------------------------------------
    @staticmethod
    def _v(model: str, version: int, name: str) -> str:
        return f"{names.model_name(model)}/versions/{int(version)}/{name}"

    # -- versions ------------------------------------------------------------------------
    def versions(self, model: str) -> list[int]:
        """Committed versions (those with a manifest), ascending."""
        out = set()
        for blob in self.storage.list(CONTAINER, f"{names.model_name(model)}/versions/"):
            m = _VERSION_DIR.match(blob.name)
            if m and blob.name.endswith("/" + MANIFEST):
                out.add(int(m.group(1)))
        return sorted(out)

    def models(self) -> list[str]:
        """Models that have at least one blob in the registry."""
        return sorted({b.name.split("/", 1)[0] for b in self.storage.list(CONTAINER, "")})

    def manifest(self, model: str, version: int) -> Manifest:
        found = get_json(self.storage, CONTAINER, self._v(model, version, MANIFEST))
        if found is None:
            raise NotFound(f"Model Version (name={model}, version={version}) not found")
        return found[0]

    def model_bytes(self, model: str, version: int, manifest: Manifest | None = None) -> bytes:
        """The version's ONNX bytes, refused unless their SHA-256 matches the manifest."""
        manifest = manifest or self.manifest(model, version)
        blob = self.storage.get(CONTAINER, self._v(model, version, MODEL_FILE))
        digest = hashlib.sha256(blob.data).hexdigest()
        if digest != manifest["onnx"]["sha256"]:
            raise IntegrityError(
                f"Model Version (name={model}, version={version}): model.onnx has SHA-256 {digest}, "
                f"the manifest says {manifest['onnx']['sha256']}; refusing to load it"
            )
        return blob.data

    def profile(self, model: str, version: int, manifest: Manifest | None = None) -> dict[str, Any]:
        """The version's reference profile, refused unless its SHA-256 matches the manifest."""
        manifest = manifest or self.manifest(model, version)
        entry = manifest.get("profile")
        if not entry:
            raise NotFound(f"Model Version (name={model}, version={version}) has no reference profile")
        blob = self.storage.get(CONTAINER, self._v(model, version, entry["file"]))
        if hashlib.sha256(blob.data).hexdigest() != entry["sha256"]:
            raise IntegrityError(f"Model Version (name={model}, version={version}): "
                                 "profile.json does not match its manifest")
        return json.loads(blob.data)

    def version_for_run(self, model: str, run_id: str) -> int | None:
        """The version a run was given, if any (including one claimed but not committed)."""
        found = get_json(self.storage, CONTAINER, f"{model}/runs/{run_id}.json")
        if found:
            return int(found[0]["version"])
        # A crash between the claim and the index leaves a claim without an index entry:
        # look at the uncommitted claims (normally none or one).
        committed = set(self.versions(model))
        for blob in self.storage.list(CONTAINER, f"{model}/versions/"):
            m = _VERSION_DIR.match(blob.name)
            if m and blob.name.endswith("/" + CLAIM) and int(m.group(1)) not in committed:
                claim = get_json(self.storage, CONTAINER, blob.name)
                if claim and claim[0].get("run_id") == run_id:
                    return int(m.group(1))
        return None

    def allocate(self, model: str, run_id: str) -> int:
        """The version number for ``run_id``: reused if it has one, else the next free one.

        A create-only claim makes the allocation race-free: of two concurrent
        registrations, one wins each number and the other moves on to the next.
        """
        existing = self.version_for_run(model, run_id)
        if existing is not None:
            return existing
        taken = [
            int(m.group(1))
            for b in self.storage.list(CONTAINER, f"{model}/versions/")
            if (m := _VERSION_DIR.match(b.name))
        ]
        version = max(taken, default=0) + 1
        while True:
            try:
                put_json(
                    self.storage,
                    CONTAINER,
                    self._v(model, version, CLAIM),
                    {"run_id": run_id, "claimed_at": time.time()},
                    create_only=True,
                )
                break
            except AlreadyExists:
                version += 1
        put_json(self.storage, CONTAINER, f"{model}/runs/{run_id}.json", {"version": version})
        return version

    def commit(self, model: str, version: int, onnx_bytes: bytes, manifest: Manifest,
               extra: dict[str, bytes] | None = None) -> Manifest:
        """Write the model file (and ``extra`` files), then the manifest (create-only) that
        makes the version visible.

        Idempotent: a second call for a committed version returns the stored manifest.
        """
        try:
            return self.manifest(model, version)
        except NotFound:
            pass
        self.storage.put(CONTAINER, self._v(model, version, MODEL_FILE), onnx_bytes)
        faults.point("register:after_model_file")
        for name, data in (extra or {}).items():
            self.storage.put(CONTAINER, self._v(model, version, name), data)
        manifest = {**manifest, "model": model, "version": version, "committed_at": time.time()}
        try:
            put_json(self.storage, CONTAINER, self._v(model, version, MANIFEST), manifest, create_only=True)
        except AlreadyExists:
            return self.manifest(model, version)
        return manifest

    # -- aliases -------------------------------------------------------------------------
    def alias(self, model: str, alias: str = PRODUCTION) -> Alias | None:
        found = get_json(self.storage, CONTAINER, f"{names.model_name(model)}/aliases/{names.alias_name(alias)}.json")
        if found is None:
            return None
        record, etag = found
        return Alias(model, alias, int(record["version"]), etag, record)

    def alias_if_changed(self, model: str, etag: str | None, alias: str = PRODUCTION) -> tuple[bool, Alias | None]:
        """A cheap conditional read: ``(False, None)`` while the alias still has ``etag``."""
        name = f"{names.model_name(model)}/aliases/{names.alias_name(alias)}.json"
        try:
            blob = self.storage.get_if_changed(CONTAINER, name, etag) if etag else self.storage.get(CONTAINER, name)
        except NotFound:
            return etag is not None, None
        if blob is None:
            return False, None
        record = json.loads(blob.data)
        return True, Alias(model, alias, int(record["version"]), blob.info.etag, record)

    def aliases(self, model: str) -> dict[str, int]:
        out = {}
        for blob in self.storage.list(CONTAINER, f"{model}/aliases/"):
            alias = blob.name.rsplit("/", 1)[-1].removesuffix(".json")
            found = self.alias(model, alias)
            if found:
                out[alias] = found.version
        return out

    def move_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        expected: Alias | None,
        event: str,
        reason: str,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> Alias:
        """Point ``alias`` at ``version`` if it still points where ``expected`` says.

        ``expected=None`` means "the alias does not exist yet" (create-only). A lost race
        raises ``PreconditionFailed``; the caller re-reads and decides again.

        The move and its audit entry are both or neither: the alias record carries its own
        audit entry (name and content), and the entry is written to ``audit/`` after the
        move. If that second write fails (a crash, a full disk), the entry is not lost: the
        next move of the alias writes it before moving on, and ``audit_log`` writes it (or,
        while storage still refuses, shows it) whenever the log is read. A move that fails
        writes no entry at all.
        """
        self.manifest(model, version)  # aliases point only at committed versions
        if expected is not None:
            self._ensure_audited(model, expected.record)  # the move before this one, if unrecorded
        now = time.time()
        record = {
            "model": model,
            "alias": alias,
            "version": version,
            "previous": expected.version if expected else None,
            "updated_at": now,
            "reason": reason,
            "actor": actor,
        }
        record["audit"] = {"name": self._audit_name(model, event, now), "event": event, "details": details or {}}
        name = f"{model}/aliases/{names.alias_name(alias)}.json"
        if expected is None:
            try:
                info = put_json(self.storage, CONTAINER, name, record, create_only=True)
            except AlreadyExists:
                raise PreconditionFailed(f"alias {model}@{alias} was created concurrently") from None
        else:
            info = put_json(self.storage, CONTAINER, name, record, if_match=expected.etag)
        faults.point("registry:after_alias_before_audit")
        try:
            self._ensure_audited(model, record)
        except Exception as exc:  # the move stands; its entry is written by the next reader or move
            log.warning("alias %s@%s moved to v%s; its audit entry is pending (%s)", model, alias, version, exc)
        return Alias(model, alias, version, info.etag, record)

    # -- promotion decisions -------------------------------------------------------------
    @staticmethod
    def _decision(model: str, version: int) -> str:
        return f"{names.model_name(model)}/decisions/{int(version)}.json"

    def decision(self, model: str, version: int) -> Decision | None:
        """The promotion decision taken on ``version``, or None before it was decided."""
        found = get_json(self.storage, CONTAINER, self._decision(model, version))
        return found[0] if found else None

    def is_decided(self, model: str, version: int) -> bool:
        return self.storage.head(CONTAINER, self._decision(model, version)) is not None

    def record_decision(self, model: str, version: int, decision: Decision) -> None:
        """Write the decision once; raises ``AlreadyExists`` if it was taken already."""
        put_json(self.storage, CONTAINER, self._decision(model, version),
                 {"schema_version": 1, **decision}, create_only=True)

    # -- audit ---------------------------------------------------------------------------
    @staticmethod
    def _audit_name(model: str, event: str, at: float) -> str:
        """Names sort by time and never collide."""
        return f"{model}/audit/{_utc_stamp(at)}-{uuid.uuid4().hex[:6]}-{event}.json"

    @staticmethod
    def _entry_of(record: dict[str, Any]) -> AuditEntry:
        """The audit entry an alias record carries, as it is stored."""
        audit = record["audit"]
        plain = {k: v for k, v in record.items() if k != "audit"}
        # The alias record's fields and the move's open-ended details, read from JSON: the
        # entry is AuditEntry's keys and more, which a TypedDict cannot declare.
        return cast(AuditEntry, {"event": audit["event"], "at": record["updated_at"], **plain,
                                 **audit.get("details", {})})

    def _ensure_audited(self, model: str, record: dict[str, Any]) -> bool:
        """Write the audit entry an alias record carries, unless it is there; True if written."""
        audit = record.get("audit")
        if not isinstance(audit, dict) or not audit.get("name"):
            return False  # a record from before entries were carried
        if self.storage.head(CONTAINER, audit["name"]) is not None:
            return False
        try:
            put_json(self.storage, CONTAINER, audit["name"], self._entry_of(record), create_only=True)
        except AlreadyExists:
            return False
        return True

    def audit(self, model: str, event: str, record: Mapping[str, Any]) -> str:
        """Append an audit record (for events that move no alias, such as a rejection)."""
        now = time.time()
        name = self._audit_name(model, event, now)
        put_json(self.storage, CONTAINER, name, {"schema_version": 1, "event": event, "at": now, **record},
                 create_only=True)
        return name

    def audit_log(self, model: str, limit: int = 100) -> list[AuditEntry]:
        """The last ``limit`` audit entries, oldest first, the current aliases' moves included.

        An alias whose entry is missing (the writer failed after the move) gets it written
        now; if storage still refuses, the entry is shown from the alias record, marked
        ``"pending": true``, so a reader never sees a move without its record.
        """
        model = names.model_name(model)
        pending: list[tuple[str, AuditEntry]] = []
        for blob in self.storage.list(CONTAINER, f"{model}/aliases/"):
            found = get_json(self.storage, CONTAINER, blob.name)
            if not found or not isinstance(found[0].get("audit"), dict):
                continue
            try:
                self._ensure_audited(model, found[0])
            except Exception as exc:
                log.warning("could not write the pending audit entry of %s: %s", blob.name, exc)
                pending.append((found[0]["audit"]["name"], {**self._entry_of(found[0]), "pending": True}))
        entries: list[tuple[str, AuditEntry]] = []
        for blob in self.storage.list(CONTAINER, f"{model}/audit/")[-limit:]:
            found = get_json(self.storage, CONTAINER, blob.name)
            if found:
                entries.append((blob.name, found[0]))
        entries.extend(pending)
        entries.sort(key=lambda e: e[0])
        return [entry for _, entry in entries[-limit:]]
