"""Reading S3 objects with boto3 and the standard AWS credential chain (the ``s3`` extra).

boto3 is imported on first use. One client serves every sample: boto3 clients are thread-safe
once built, building one is not (hence the lock). Credentials and settings come from boto3's own
chain, so ``AWS_PROFILE``, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``,
for an S3-compatible store) work as everywhere else. When the chain finds no credentials the
client reads anonymously, so public buckets keep working as they do over HTTP, and a refusal is
reported as missing credentials with the places that were searched.

botocore's own retries are off (one attempt per call); the caller retries
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
    "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), "
    "~/.aws/credentials and ~/.aws/config (profile AWS_PROFILE, else default), "
    "web identity (AWS_WEB_IDENTITY_TOKEN_FILE) and the container or instance role"
)

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden"})
_REJECTED_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
_CHUNK = 1 << 20


class S3Reader(BucketReader):
    """``get_object`` for :class:`BucketObject` s of scheme ``s3``, size-limited."""

    def read(self, obj: BucketObject) -> bytes:
        client = self._get_client()
        from botocore import exceptions as boto_errors

        buffer = self._buffer(obj)
        try:
            response = client.get_object(Bucket=obj.bucket, Key=obj.key)
            body = response["Body"]
            try:
                buffer.check_declared(response.get("ContentLength"))
                return buffer.fill(body.iter_chunks(_CHUNK))
            finally:
                body.close()
        except boto_errors.ClientError as exc:
            raise self._client_error(exc, obj) from None
        except (
            boto_errors.NoCredentialsError,
            boto_errors.PartialCredentialsError,
            boto_errors.CredentialRetrievalError,
        ) as exc:
            # A credential_process's stderr ends in a newline: the report shows one line.
            reason = " ".join(str(exc).split())
            raise MissingCredentialsError(
                f"AWS credentials for bucket {obj.bucket} are unusable ({reason}); "
                f"looked in {CREDENTIAL_CHAIN}"
            ) from None
        except boto_errors.SSLError as exc:
            raise StorageError(f"{obj}: TLS error: {exc}") from None
        except (
            boto_errors.ConnectionError,
            boto_errors.HTTPClientError,
            boto_errors.IncompleteReadError,
        ) as exc:
            raise TransientStorageError(f"{obj}: {exc}") from None
        except boto_errors.BotoCoreError as exc:
            raise StorageError(f"{obj}: {type(exc).__name__}: {exc}") from None

    def _client_error(self, exc: Any, obj: BucketObject) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{code} {error.get('Message', '')}".strip()
        if code == "NoSuchKey" or (status == 404 and code in ("404", "NotFound")):
            return StorageNotFoundError(f"no such key: {obj}")
        if code == "NoSuchBucket":
            return StorageNotFoundError(f"no such bucket: {obj.bucket} ({obj})")
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientStorageError(f"{obj}: {detail} (HTTP {status})")
        if code in _REJECTED_CREDENTIAL_CODES:
            return AccessDeniedError(f"the AWS credentials in use were rejected for {obj} ({code})")
        if code in _DENIED_CODES or status in (401, 403):
            if self._anonymous:
                return MissingCredentialsError(
                    f"no AWS credentials found for bucket {obj.bucket}, and it refuses "
                    f"anonymous reads of {obj}; looked in {CREDENTIAL_CHAIN}"
                )
            return AccessDeniedError(
                f"access denied to {obj} ({detail}): the AWS credentials in use may not read it"
            )
        return StorageError(f"{obj}: {detail} (HTTP {status})")

    def _build_client(self) -> tuple[Any, bool]:
        try:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise MissingExtraError(
                "reading s3:// and private S3 URLs needs boto3: pip install 'prelabel[s3]'"
            ) from None
        settings = self._settings
        options: dict[str, Any] = {
            "connect_timeout": settings.connect_timeout_s,
            "read_timeout": settings.read_timeout_s,
            "retries": {"mode": "standard", "total_max_attempts": 1},
            "max_pool_connections": 64,  # the most fetch threads a run can have
        }
        try:
            session = boto3.session.Session()
            anonymous = session.get_credentials() is None
            if anonymous:
                options["signature_version"] = UNSIGNED
                logger.info(
                    "no AWS credentials found (looked in %s); reading S3 anonymously",
                    CREDENTIAL_CHAIN,
                )
            return session.client("s3", config=Config(**options)), anonymous
        except BotoCoreError as exc:
            # A named profile that does not exist, a broken config file, a failed role lookup.
            raise MissingCredentialsError(
                f"cannot set up AWS credentials: {exc}; looked in {CREDENTIAL_CHAIN}"
            ) from None
