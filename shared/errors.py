"""One error hierarchy for the whole system.

Every error carries a stable ``code``; the HTTP adapter maps codes to status codes in
one table (``functions/http_api.py``) and the pipeline uses ``permanent`` to decide
between "record and complete" and "raise so the platform retries".
"""
from __future__ import annotations

from typing import Any


class MlopsError(Exception):
    """Base class: a failure with a stable code and a human-readable message."""

    code = "INTERNAL_ERROR"
    #: A permanent error is recorded and not retried; a transient one is re-raised.
    permanent = True

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"]["details"] = self.details
        return body


class InvalidName(MlopsError):
    """A model, file or alias name that cannot safely become a storage path."""

    code = "INVALID_NAME"


class SpecError(MlopsError):
    """A model spec is missing, unreadable or declares something unsupported."""

    code = "INVALID_SPEC"


class DatasetError(MlopsError):
    """A dataset failed validation against its model's spec."""

    code = "INVALID_DATASET"


class ParityError(MlopsError):
    """ONNX Runtime and scikit-learn disagree beyond the spec's tolerance."""

    code = "PARITY_FAILED"


class ConversionError(MlopsError):
    """skl2onnx could not convert the fitted pipeline."""

    code = "CONVERSION_FAILED"


class InvalidMessage(MlopsError):
    """A queue message is not valid JSON or misses required fields."""

    code = "INVALID_MESSAGE"


class InvalidRequest(MlopsError):
    """An HTTP request's payload is malformed; the message names the field."""

    code = "INVALID_REQUEST"


class PayloadTooLarge(MlopsError):
    """A request body is over the configured size limit."""

    code = "PAYLOAD_TOO_LARGE"


class NotFound(MlopsError):
    """A named object (model, version, blob, run) does not exist."""

    code = "NOT_FOUND"


class ModelNotFound(NotFound):
    """No spec and no registry entry exist for the model."""

    code = "MODEL_NOT_FOUND"


class NoProductionVersion(MlopsError):
    """The model exists but no version has been promoted to production yet."""

    code = "NO_PRODUCTION_VERSION"


class IntegrityError(MlopsError):
    """An artifact's hash differs from the one its manifest recorded."""

    code = "INTEGRITY_ERROR"


class Unauthorized(MlopsError):
    """The request lacks a valid key for the route's authorization level."""

    code = "UNAUTHORIZED"


class Conflict(MlopsError):
    """A conditional write lost: the object changed or already exists."""

    code = "CONFLICT"
    permanent = False


class PreconditionFailed(Conflict):
    """An If-Match write found a different ETag."""

    code = "PRECONDITION_FAILED"


class AlreadyExists(Conflict):
    """A create-only write found the object already present."""

    code = "ALREADY_EXISTS"


class TransientError(MlopsError):
    """Storage or bus unavailable: raise so the platform retries."""

    code = "TRANSIENT"
    permanent = False


class BudgetExceeded(MlopsError):
    """A fit ran past its spec's time budget; its process was ended."""

    code = "TIME_BUDGET_EXCEEDED"


class WorkerCrashed(MlopsError):
    """The process running a stage died without an answer (killed, out of memory)."""

    code = "WORKER_CRASHED"
    permanent = False
