"""``--log-format``: how the long-running commands (run, sync, serve) write their log.

``text`` (default) is the one-line human format set up by the ``prelabel`` group. ``json`` is
one JSON object a line for log collectors, with the same keys on every line::

    {"time": "2025-01-31T12:00:00.123+00:00", "level": "INFO", "logger": "prelabel.serve...",
     "message": "...", "dataset": "jane/streets", "sample": "<uuid>", "outcome": "labeled",
     "reason": null}

``dataset``, ``sample``, ``outcome`` and ``reason`` come from the record's ``extra`` (the
per-outcome lines set them) and are null elsewhere. Secrets are replaced by ``***`` in the
finished line, tracebacks included; :func:`prelabel.cli._common.install_redaction` already does
it for messages in either format. The option itself is declared once, in
:mod:`prelabel.cli._common` (``labeling_options``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
#: Keys of every JSON line besides time, level, logger and message.
CONTEXT_FIELDS = ("dataset", "sample", "outcome", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object a line; every secret in ``secrets`` is replaced by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            data[name] = getattr(record, name, None)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        line = json.dumps(data, default=str)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def use_log_format(log_format: str, secrets: Iterable[str] = ()) -> None:
    """Switch the root logger's handlers to ``log_format`` (``text`` leaves them as they are)."""
    if log_format != "json":
        return
    formatter = JsonFormatter(secrets)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def set_verbosity(verbose: int) -> None:
    """-v: info, -vv: debug, for prelabel and the libraries; called by the group and by each
    command (``-v`` works before or after the command's name), the larger count wins."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(min(root.level, level) if verbose else root.level)
    # Their debug lines quote request headers: signatures and credential ids.
    for name in ("botocore", "boto3", "s3transfer", "google"):
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
