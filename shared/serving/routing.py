"""Routing a request to a version during a rollout: the split the runtime holds, and the sticky
draw that decides which side of it a request falls on.

A canary step sends ``candidate_percent`` of requests to the candidate, sticky by a routing
key: the request's ``x-routing-key`` header, else the value of the spec's
``[rollout] routing_field`` in the request's first row, else the request's (server-minted) id.
The key is hashed with the rollout's identity (model, candidate, start) and the step, so one
caller sees one version for the whole of a step, and each step draws its share afresh.

The split is built off the request path (``ModelServer.refresh``) and only once the candidate
is loaded; the request path reads one attribute and hashes one key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.serving.protocols.batch import Batch

#: The header a caller names its routing key in (a user, a session, a device).
ROUTING_HEADER = "x-routing-key"
#: The draw's resolution: a share is judged to one part in 2**32.
_SCALE = 2**32


@dataclass(frozen=True, slots=True)
class Split:
    """What routing does for one model now: ``candidate`` answers ``percent`` of requests."""

    candidate: Any  # LoadedModel; kept untyped here so the module imports no runtime
    percent: float
    #: ``model:candidate:started_at:step``: the hash salt, so a new rollout or step draws afresh.
    salt: bytes
    routing_field: str | None = None
    #: Keys drawing below this go to the candidate (``percent`` of the draw's range).
    threshold: int = 0

    @classmethod
    def of(cls, candidate: Any, percent: float, salt: bytes, routing_field: str | None = None) -> Split:
        return cls(candidate, percent, salt, routing_field, int(percent / 100 * _SCALE))

    def takes(self, key: str) -> bool:
        """Whether the request with routing ``key`` goes to the candidate (sticky per step)."""
        return draw(self.salt, key) < self.threshold


def salt_of(model: str, candidate: int, started_at: float, step: int) -> bytes:
    """The rollout's identity and step, as the draw's key (at most 64 bytes: BLAKE2b's key size)."""
    return hashlib.blake2b(f"{model}:{candidate}:{started_at!r}:{step}".encode(), digest_size=32).digest()


def draw(salt: bytes, key: str) -> int:
    """A uniform 32-bit number from ``key`` under ``salt`` (keyed BLAKE2b, about 1 µs)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4, key=salt).digest()
    return int.from_bytes(digest, "big")


def field_key(batch: Batch, field: str) -> str | None:
    """The routing key a request carries in ``field``: its first row's value, as text; None
    when the batch has no such column or the value is missing."""
    values = batch.strings.get(field)
    if values is not None:
        if not batch.rows or (batch.missing and field in batch.missing and bool(batch.missing[field].ravel()[0])):
            return None
        return str(values.ravel()[0])
    if batch.numeric is not None and field in batch.numeric_names and batch.rows:
        value = float(batch.numeric[0, batch.numeric_names.index(field)])
        return None if np.isnan(value) else repr(value)
    return None
