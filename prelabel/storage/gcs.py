"""Reading GCS objects with google-cloud-storage and application default credentials (the
``gcs`` extra).

The library is imported on first use; one client serves every sample (built under a lock).
Credentials come from application default credentials; ``STORAGE_EMULATOR_HOST`` points the
client at an emulator (which needs none). Without credentials the client reads anonymously, so
public buckets keep working, and a refusal is reported as missing credentials.

The library's own retries are off (``retry=None``); the caller retries
:class:`~prelabel.errors.TransientStorageError` with backoff, as for the Segments API.
"""

from __future__ import annotations

import logging
from typing import Any

from prelabel.errors import (
    AccessDeniedError,
    MissingCredentialsError,
    MissingExtraError,
    StorageError,
    StorageNotFoundError,
    TransientStorageError,
)
from prelabel.storage.base import BucketReader
from prelabel.storage.urls import BucketObject

logger = logging.getLogger(__name__)

CREDENTIAL_CHAIN = (
    "GOOGLE_APPLICATION_CREDENTIALS, the gcloud application default credentials "
    "(gcloud auth application-default login) and the metadata server on Google Cloud"
)


class GcsReader(BucketReader):
    """``download_to_file`` for :class:`BucketObject` s of scheme ``gs``, size-limited."""

    def read(self, obj: BucketObject) -> bytes:
        client = self._get_client()
        import google.auth.exceptions as auth_errors
        import requests
        from google.api_core import exceptions as api_errors
        from google.resumable_media import DataCorruption

        timeout = (self._settings.connect_timeout_s, self._settings.read_timeout_s)
        buffer = self._buffer(obj)
        try:
            blob = client.bucket(obj.bucket).blob(obj.key)
            blob.download_to_file(buffer, timeout=timeout, retry=None)
            return buffer.getvalue()
        except api_errors.NotFound:
            raise self._not_found(client, obj, timeout) from None
        except (api_errors.Unauthorized, api_errors.Forbidden) as exc:
            if self._anonymous:
                raise MissingCredentialsError(
                    f"no Google credentials found for bucket {obj.bucket}, and it refuses "
                    f"anonymous reads of {obj}; looked in {CREDENTIAL_CHAIN}"
                ) from None
            raise AccessDeniedError(
                f"access denied to {obj} (HTTP {exc.code}): the Google credentials in use may "
                "not read it"
            ) from None
        except (api_errors.TooManyRequests, api_errors.ServerError) as exc:
            raise TransientStorageError(f"{obj}: HTTP {exc.code}") from None
        except api_errors.GoogleAPICallError as exc:
            raise StorageError(f"{obj}: HTTP {exc.code}") from None
        except auth_errors.RefreshError as exc:
            raise MissingCredentialsError(
                f"the Google credentials for bucket {obj.bucket} could not be refreshed ({exc})"
            ) from None
        except (
            auth_errors.TransportError,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            DataCorruption,
        ) as exc:
            raise TransientStorageError(f"{obj}: {type(exc).__name__}") from None

    @staticmethod
    def _not_found(client: Any, obj: BucketObject, timeout: tuple[float, float]) -> StorageError:
        """Tell a missing bucket from a missing object (both are a 404 on download).

        Asking whether the bucket exists needs ``storage.buckets.get``, which object readers
        may lack; then the message says the object was not found without blaming either.
        """
        from google.api_core import exceptions as api_errors

        try:
            bucket_exists = client.bucket(obj.bucket).exists(timeout=timeout, retry=None)
        except api_errors.GoogleAPICallError:
            return StorageNotFoundError(f"not found: {obj} (no such key, or no such bucket)")
        if not bucket_exists:
            return StorageNotFoundError(f"no such bucket: {obj.bucket} ({obj})")
        return StorageNotFoundError(f"no such key: {obj}")

    def _build_client(self) -> tuple[Any, bool]:
        try:
            import google.auth.exceptions as auth_errors
            import google.cloud.storage as storage
        except ImportError:
            raise MissingExtraError(
                "reading gs:// and private GCS URLs needs google-cloud-storage: "
                "pip install 'prelabel[gcs]'"
            ) from None
        try:
            return storage.Client(), False
        except auth_errors.DefaultCredentialsError:
            logger.info(
                "no Google credentials found (looked in %s); reading GCS anonymously",
                CREDENTIAL_CHAIN,
            )
            return storage.Client.create_anonymous_client(), True
