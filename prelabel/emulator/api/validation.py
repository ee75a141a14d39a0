"""Checks every resource applies to a request: paging parameters, JSON objects, names.

Each failure raises the :class:`~prelabel.emulator.wire.ApiError` a DRF server would answer
with, field errors as ``{field: [message]}``, so the SDK sees the same errors as in production.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prelabel.emulator.wire import ApiError, field_error

_NAME_PATTERN = re.compile(r"^[\w.-]+$")
_INVALID_PAGE = "Invalid page."


def _int_or_zero(raw: str) -> int:
    """``raw`` as an int, or 0 (which every caller rejects) when it is not one."""
    try:
        return int(raw)
    except ValueError:
        return 0


def page_number(query: Mapping[str, str]) -> int:
    page = _int_or_zero(query.get("page", "1"))
    if page < 1:
        raise ApiError(404, {"detail": _INVALID_PAGE})
    return page


def per_page(query: Mapping[str, str], default: int) -> int:
    raw = query.get("per_page")
    if raw is None:
        return default
    count = _int_or_zero(raw)
    if count < 1:
        raise field_error("per_page", "A valid positive integer is required.")
    return count


def check_page(items: Sequence[Any], page: int) -> None:
    """DRF pagination: page 1 may be empty, any later empty page does not exist."""
    if page > 1 and not items:
        raise ApiError(404, {"detail": _INVALID_PAGE})


def require_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise field_error(name, "Expected a dictionary of items.")
    return value


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_PATTERN.match(value):
        raise field_error(
            "name", f"Enter a valid {what} name: letters, numbers, '_', '-' or '.' only."
        )
    return value
