"""The error tree of prelabel, by cause.

The CLI turns a :class:`PrelabelError` into one clear line and an exit code; anything else is a
bug and keeps its traceback. Subclasses carry no logic, only what a message needs.
"""

from __future__ import annotations


class PrelabelError(Exception):
    """Base of every error prelabel raises on purpose."""


class ConfigError(PrelabelError):
    """A config or categories file, or a command-line value, is unusable."""


class TaxonomyError(ConfigError):
    """The categories cannot be turned into prompts (unknown name, duplicate id, ...)."""


class ModelLoadError(PrelabelError):
    """Model weights could not be found or loaded; the message says where we looked."""


class NonFiniteOutputError(ModelLoadError):
    """A model returned NaN or infinity: usually half precision, sometimes broken weights.

    Run-wide, like a model that cannot load: it would repeat on every image, each one becoming
    an empty label, so the run stops with the setting to change.
    """


class PromptTooLongError(ModelLoadError):
    """A category's prompt its model cannot read even cut short.

    Run-wide, like a model that cannot load: the prompt is the same for every image, so the run
    stops before the first one with the category to change rather than failing them all.
    """


class ImageError(PrelabelError):
    """An image cannot be decoded or is refused (too many pixels, truncated, unknown format)."""


class SampleError(PrelabelError):
    """One sample failed; the run records it and goes on.

    Carries the sample's identity so the report can name it, and ``transient`` when a server
    caused it (its image host answered 5xx after retries): that never counts toward parking.
    """

    def __init__(
        self, message: str, *, sample_uuid: str = "", sample_name: str = "", transient: bool = False
    ) -> None:
        super().__init__(message)
        self.sample_uuid = sample_uuid
        self.sample_name = sample_name
        self.transient = transient


class RemoteError(PrelabelError):
    """The Segments.ai API refused a request for a reason a retry will not fix."""


class AuthError(RemoteError):
    """The API key is missing, wrong or lacks access; retrying cannot help."""


class NotFoundRemoteError(RemoteError):
    """The dataset, sample, label or asset does not exist."""


class TransientRemoteError(RemoteError):
    """A failure a retry may fix: connection trouble, timeouts, 5xx, rate limiting."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(PrelabelError):
    """An image could not be read from where it is stored (a bucket or a web server).

    One sample's problem: the sample fails with this message and the run goes on. Messages name
    the object without any query string (signed URLs are credentials).
    """


class StorageAccessError(StorageError):
    """We may not read the object from here; the URL Segments signs may still work."""


class AccessDeniedError(StorageAccessError):
    """The storage refused the credentials in use (or anonymous access): 401/403."""


class MissingCredentialsError(StorageAccessError):
    """No credentials were found for a bucket that refuses anonymous reads."""


class MissingExtraError(StorageAccessError):
    """The URL needs an optional client library; the message names the extra to install."""


class StorageNotFoundError(StorageError):
    """No such key (object), or no such bucket; the message says which."""


class TransientStorageError(StorageError):
    """A failure a retry may fix: connection trouble, timeouts, throttling, 5xx."""
