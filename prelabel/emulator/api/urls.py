"""Asset URLs, stored host-independent so a restarted emulator still serves them.

The URLs the emulator hands out (``http://<host>/s3/<key>``) name the host and port the client
used. Stored as they are, a SQLite-backed emulator restarted on another port would serve dead
image and bitmap URLs; so they are stored with a host-free placeholder (:func:`portable_urls`)
and put back for whichever host the client reaches the emulator on (:func:`local_urls`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prelabel.emulator import s3

_PORTABLE_PREFIX = "emulator-asset:///"


def asset_url(key: str, base_url: str) -> str:
    """The public URL of the asset ``key`` on the server at ``base_url``."""
    return base_url + s3.DOWNLOAD_PREFIX.lstrip("/") + key


def _map_strings(value: Any, convert: Callable[[str], str]) -> Any:
    """``value`` with ``convert`` applied to every string in it, in nested dicts and lists too
    (dict keys are left alone)."""
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, convert) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, convert) for item in value]
    return value


def portable_urls(value: Any, base_url: str) -> Any:
    """Replace this server's asset URLs by a host-free placeholder before storing."""
    prefix = asset_url("", base_url)

    def portable(text: str) -> str:
        return _PORTABLE_PREFIX + text[len(prefix) :] if text.startswith(prefix) else text

    return _map_strings(value, portable)


def local_urls(value: Any, base_url: str) -> Any:
    """Inverse of :func:`portable_urls` for the host the client used."""

    def local(text: str) -> str:
        if text.startswith(_PORTABLE_PREFIX):
            return asset_url(text[len(_PORTABLE_PREFIX) :], base_url)
        return text

    return _map_strings(value, local)


def signed_urls(value: Any, signer: Callable[[str], str | None]) -> Any:
    """Add ``signed_url`` next to every ``url`` the signer signs (``?include_signed_urls=1``).

    The real service signs URLs into buckets it was given access to; the signer stands in for
    that access (a test presigns with credentials the connector does not have).
    """
    if isinstance(value, dict):
        signed = {key: signed_urls(item, signer) for key, item in value.items()}
        url = value.get("url")
        if isinstance(url, str) and (signature := signer(url)) is not None:
            signed["signed_url"] = signature
        return signed
    if isinstance(value, list):
        return [signed_urls(item, signer) for item in value]
    return value
