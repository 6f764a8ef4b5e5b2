"""One error hierarchy for the whole system.

Every error carries a stable ``code``; the HTTP edge maps codes to status codes in one
table and writes each protocol's error body once (``functions/edge.py``), and the pipeline
uses ``permanent`` to decide between "record and complete" and "raise so the platform retries"
(the edge also reads it: a 503 gets ``Retry-After`` only when it is false).
"""
from __future__ import annotations

from typing import Any

#: How much of a client's own text an error message may quote back.
MAX_ECHO_CHARS = 200
#: The longest message an error keeps (``shared.core.errors.MlopsError``), whoever reads it.
MAX_MESSAGE_CHARS = 2000
#: The longest reason a server-side failure (a 5xx) gives a client: it quotes recorded causes
#: (a quarantined dataset's reason), not the client's own text, and is kept whole up to here.
MAX_REASON_CHARS = 600


def clip_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary (mid-word only when a
    word is longer than a third of the limit), saying how long it was."""
    if len(text) <= limit:
        return text
    tail = f"... ({len(text):,} characters)"
    cut = text[:max(limit - len(tail), 1)]
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:  # a boundary close enough to keep most of what fits
        cut = cut[:space]
    return cut.rstrip(" ,;:") + tail


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """``value`` with any string in it cut to ``limit`` characters (for error bodies)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... ({len(value):,} characters)"
    if isinstance(value, dict):
        return {clip(k, limit): clip(v, limit) for k, v in list(value.items())[:20]}
    if isinstance(value, (list, tuple)):
        return [clip(v, limit) for v in list(value)[:20]]
    return value


class MlopsError(Exception):
    """Base class: a failure with a stable code and a human-readable message."""

    code = "INTERNAL_ERROR"
    #: A permanent error is recorded and not retried; a transient one is re-raised.
    permanent = True

    def __init__(self, message: str, **details: Any) -> None:
        # Messages quote what they refuse (a column name, a value, a library's text), which a
        # dataset or request can make megabytes long; every record and log line of an error is
        # bounded here.
        message, details = clip(message, MAX_MESSAGE_CHARS), clip(details)
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidName(MlopsError):
    """A model, file or alias name that cannot safely become a storage path."""

    code = "INVALID_NAME"


class MisplacedDataset(InvalidName):
    """A blob in the ``datasets`` container that is not ``<model>/<file>``."""

    code = "INVALID_PATH"


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
    """The model exists but no version has been promoted to production yet.

    ``permanent`` says whether waiting can help: false while a run is in progress (a version
    may be promoted shortly), true when the latest run was quarantined, failed or rejected, or
    none ever ran (only a new dataset helps). The HTTP edge sends ``Retry-After`` only for the former.
    """

    code = "NO_PRODUCTION_VERSION"

    def __init__(self, message: str, *, permanent: bool = True, **details: Any) -> None:
        super().__init__(message, **details)
        self.permanent = permanent


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


class RunFailed(MlopsError):
    """The version a request was routed to failed to run its rows (a server fault, not the client's)."""

    code = "RUN_FAILED"


class UnsupportedMediaType(MlopsError):
    """A request body in a content type the route does not read."""

    code = "UNSUPPORTED_MEDIA_TYPE"


#: HTTP statuses of a storage or bus service that say "try again later".
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether the platform should retry the work that raised ``exc``.

    Our own errors say so themselves. Outside the hierarchy, an unavailable or throttled
    service (an ``OSError``, an Azure SDK request that could not be made or got a 5xx or 429)
    is transient. Anything else raised by a library (a converter's ``ValueError``, a fit's
    ``LinAlgError``) is deterministic for the same input: retrying it ten times only delays
    the failure and hides its reason, so it is permanent.
    """
    if isinstance(exc, MlopsError):
        return not exc.permanent
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, ENOSPC, EIO... but not EACCES/EPERM
        return not isinstance(exc, PermissionError)
    for klass in type(exc).__mro__:  # the Azure SDKs, without importing them here
        if klass.__module__.startswith(("azure.core.exceptions", "azure.servicebus")):
            if klass.__name__ in ("ServiceRequestError", "ServiceResponseError", "ServiceBusConnectionError",
                                  "OperationTimeoutError", "ServiceBusServerBusyError"):
                return True
            status = getattr(exc, "status_code", None)
            return status is None or status in _RETRYABLE_STATUS
    return False


def as_permanent(exc: BaseException, code: str) -> MlopsError:
    """A library's exception as a recordable, permanent error that names its type."""
    if isinstance(exc, MlopsError):
        return exc
    err = MlopsError(f"{type(exc).__name__}: {exc}"[:2000])
    err.code = code
    return err
