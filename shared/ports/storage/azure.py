"""Azure Blob Storage backend (azure-storage-blob); the same code runs on Azurite and Azure.

Authentication: a connection string (setting ``MlopsStorage``), or an account URL
(``MlopsStorage__blobServiceUri``) with ``DefaultAzureCredential`` for managed identity.
Containers are created on first use. Transport failures surface as ``TransientError``
so that the platform retries the invocation.
"""
from __future__ import annotations

import functools
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from shared.core.errors import AlreadyExists, NotFound, PreconditionFailed, TransientError
from shared.ports.storage import Blob, BlobInfo, check_blob_name, check_container

if TYPE_CHECKING:
    from shared.core.settings import Settings


def _etag(value: str) -> str:
    # Listings return ETags bare, reads and writes quoted: one form, or comparisons fail.
    return value if value.startswith('"') else f'"{value}"'


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value else 0.0


def _retry_policy(retries: int = 3):
    """The SDK's own retries, kept short: about 1.3, 1.7 and 2.2 s apart.

    The storage SDK's default waits 15, 18 and 24 s (``retry_backoff_factor`` does not apply
    to it), which held a throttled request for a minute. Longer waits belong to the callers
    that can afford them (``shared.ports.storage.retrying``).
    """
    # The SDK annotates both as int, but only does float arithmetic with them
    # (initial + base ** count, then random.uniform(backoff - jitter, backoff + jitter)).
    return ExponentialRetry(initial_backoff=0, retry_total=retries,
                            increment_base=1.3, random_jitter_range=0.3)  # type: ignore[arg-type]


#: Answers that mean "not now": throttling (429, 503 ServerBusy), a timeout, a server fault.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _transient_answers(method):
    """Throttling and server faults, after the SDK's own retries, become ``TransientError``."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except AzureError as exc:
            status = getattr(exc, "status_code", None)
            if status in TRANSIENT_STATUS:
                raise TransientError(f"storage unavailable: HTTP {status} "
                                     f"{getattr(exc, 'error_code', None) or ''}".rstrip(), status=status) from exc
            raise
    return wrapper


class AzureBlobStorage:
    """Blob storage through azure-storage-blob."""

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service
        self._created: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureBlobStorage:
        if settings.storage_connection_string:
            return cls.from_connection_string(settings.storage_connection_string)
        if settings.storage_account_url:
            from azure.identity import DefaultAzureCredential  # here: azure-identity only for identity-based auth

            # The bindings read <connection>__clientId to pick a user-assigned identity; the
            # SDK's credential must be told the same, or it looks for a system-assigned one.
            credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id or None)
            return cls(
                BlobServiceClient(settings.storage_account_url, credential=credential,
                                  retry_policy=_retry_policy(), connection_timeout=5, read_timeout=30)
            )
        raise ValueError(
            "MLOPS_STORAGE_BACKEND=azure needs MlopsStorage (connection string) "
            "or MlopsStorage__blobServiceUri (account URL, managed identity)"
        )

    @classmethod
    def from_connection_string(cls, conn: str, *, retries: int = 3) -> AzureBlobStorage:
        # Short retries: a stalled call should fail into the platform's retry, not hang.
        return cls(
            BlobServiceClient.from_connection_string(
                conn, retry_policy=_retry_policy(retries), connection_timeout=5, read_timeout=30
            )
        )

    def _container(self, container: str, *, create: bool):
        client = self._service.get_container_client(check_container(container))
        if create and container not in self._created:
            try:
                client.create_container()
            except ResourceExistsError:
                pass
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TransientError(f"storage unavailable: {exc}") from exc
            with self._lock:
                self._created.add(container)
        return client

    def get(self, container: str, name: str) -> Blob:
        blob = self._read(container, name, None)
        assert blob is not None  # no ETag to match: always read
        return blob

    def get_if_changed(self, container: str, name: str, etag: str) -> Blob | None:
        return self._read(container, name, etag)

    @_transient_answers
    def _read(self, container: str, name: str, if_none_match: str | None) -> Blob | None:
        blob = self._container(container, create=False).get_blob_client(check_blob_name(name))
        try:
            if if_none_match is not None:
                stream = blob.download_blob(etag=if_none_match, match_condition=MatchConditions.IfModified)
            else:
                stream = blob.download_blob()
            data = stream.readall()
        except ResourceNotModifiedError:
            return None
        except ResourceModifiedError:
            # Azure answers 304 to a failed If-None-Match on a read; Azurite answers 412.
            if if_none_match is not None:
                return None
            raise
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{name} not found") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"storage unavailable: {exc}") from exc
        props = stream.properties
        info = BlobInfo(container, name, _etag(props.etag), props.size, _ts(props.last_modified))
        return Blob(info=info, data=data)

    @_transient_answers
    def head(self, container: str, name: str) -> BlobInfo | None:
        blob = self._container(container, create=False).get_blob_client(check_blob_name(name))
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"storage unavailable: {exc}") from exc
        return BlobInfo(container, name, _etag(props.etag), props.size, _ts(props.last_modified))

    @_transient_answers
    def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        if_match: str | None = None,
        create_only: bool = False,
    ) -> BlobInfo:
        blob = self._container(container, create=True).get_blob_client(check_blob_name(name))
        kwargs: dict = {"overwrite": not create_only}
        if if_match is not None and not create_only:
            kwargs.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        try:
            result = blob.upload_blob(data, **kwargs)
        except ResourceExistsError:
            if create_only:
                raise AlreadyExists(f"blob {container}/{name} already exists") from None
            raise PreconditionFailed(f"blob {container}/{name} changed") from None
        except (ResourceModifiedError, ResourceNotFoundError):
            raise PreconditionFailed(
                f"blob {container}/{name} changed (ETag {if_match} no longer current)"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"storage unavailable: {exc}") from exc
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                raise PreconditionFailed(f"blob {container}/{name} changed") from None
            raise
        return BlobInfo(container, name, _etag(result["etag"]), len(data), _ts(result.get("last_modified")))

    @_transient_answers
    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        client = self._container(container, create=False)
        try:
            return [
                BlobInfo(container, b.name, _etag(b.etag), b.size, _ts(b.last_modified))
                for b in client.list_blobs(name_starts_with=prefix or None)
            ]
        except ResourceNotFoundError:
            return []
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"storage unavailable: {exc}") from exc

    @_transient_answers
    def delete(self, container: str, name: str, *, if_match: str | None = None) -> bool:
        blob = self._container(container, create=False).get_blob_client(check_blob_name(name))
        kwargs = {}
        if if_match is not None:
            kwargs = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        try:
            blob.delete_blob(**kwargs)
        except ResourceNotFoundError:
            return False
        except ResourceModifiedError:
            raise PreconditionFailed(f"blob {container}/{name} changed; not deleted") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"storage unavailable: {exc}") from exc
        return True

    def uri(self, container: str, name: str) -> str:
        return f"{self._service.url.rstrip('/')}/{container}/{name}"
