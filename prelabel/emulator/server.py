"""The :class:`Emulator`: one local Segments.ai API, started, inspected and edited from a test.

The facade over the parts: it owns the store (:mod:`.store`), the API resources (:mod:`.api`),
the fault injector (:mod:`.faults`), the request log (:mod:`.requestlog`) and the HTTP server
(:mod:`.http_server`) that puts them on a port. Tests use it to start and stop an emulator, set
faults, read the request log and write counters, and change state directly as a human in the
web app (or an admin) would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from types import TracebackType
from typing import Any, TypeVar

from prelabel.emulator.api.base import LABEL_STATUSES, task_type_of
from prelabel.emulator.api.labels import label_json
from prelabel.emulator.api.routes import SegmentsApi
from prelabel.emulator.api.urls import asset_url, portable_urls
from prelabel.emulator.faults import FaultInjector, FaultRule
from prelabel.emulator.http_server import HttpServer
from prelabel.emulator.requestlog import RequestLog, RequestRecord
from prelabel.emulator.s3 import content_type_for
from prelabel.emulator.store import Store
from prelabel.emulator.store.records import GROUND_TRUTH, UNLABELED, DatasetRecord, NewSample
from prelabel.emulator.webhooks import WebhookConfig, WebhookSender
from prelabel.emulator.wire import Request, Response

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "emulator-key"
DEFAULT_USERNAME = "jane"

_Part = TypeVar("_Part")


def _running(part: _Part | None) -> _Part:
    """A part that exists only while the emulator runs (server, store, API)."""
    if part is None:
        raise RuntimeError("the emulator is not running")
    return part


class Emulator:
    """A local Segments.ai REST API on ``http://host:port/`` for the real ``segments-ai`` SDK.

    State lives in memory, or in the SQLite file ``db_path`` so it survives a restart (asset
    URLs are stored without host and port, so a restart on another port keeps them valid).
    ``faults`` and ``seed`` configure fault injection at start; :meth:`set_faults` changes it at
    runtime. The request log is kept in memory only. With ``webhooks``, every API write that
    Segments.ai announces is POSTed, signed, to ``webhooks.url`` (:mod:`.webhooks`). An emulator
    is started once: ``start()``/``stop()`` or ``with Emulator() as emu:``.

    Example:
        >>> with Emulator(api_key="test-key") as emu:  # doctest: +SKIP
        ...     client = segments.SegmentsClient("test-key", api_url=emu.url)
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        username: str = DEFAULT_USERNAME,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | PathLike[str] | None = None,
        faults: Iterable[FaultRule] = (),
        seed: int = 0,
        webhooks: WebhookConfig | None = None,
    ) -> None:
        self.api_key = api_key
        self.webhook_config = webhooks
        self._webhooks: WebhookSender | None = None
        self.username = username
        self.host = host
        self._requested_port = port
        self.db_path = db_path
        self._injector = FaultInjector(seed=seed)
        self._injector.configure(faults)
        self._stopping = threading.Event()
        self._log = RequestLog()
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._api: SegmentsApi | None = None

    # Lifecycle -----------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind the port and serve in a background thread; returns ``self``."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("an Emulator can be started once; create a new one to restart")
        self._store = Store(self.db_path)
        if self.webhook_config is not None:
            self._webhooks = WebhookSender(self.webhook_config).start()
        on_event = self._webhooks.emit if self._webhooks else None
        self._api = SegmentsApi(self._store, self.api_key, self.username, on_event=on_event)
        self._server = HttpServer(
            (self.host, self._requested_port), self, self._injector, self._stopping, self._log
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"segments-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Segments emulator serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, release hung requests, close connections and the store."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections(timeout=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._webhooks is not None:
            self._webhooks.stop()
        if self._store is not None:
            self._store.close()
        self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the free one picked when constructed with ``port=0``)."""
        return int(_running(self._server).server_address[1])

    @property
    def url(self) -> str:
        """Base URL for ``SegmentsClient(api_url=...)``, e.g. ``http://127.0.0.1:54321/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def store(self) -> Store:
        """The state, for tests that need more than the helpers below."""
        return _running(self._store)

    @property
    def api(self) -> SegmentsApi:
        return _running(self._api)

    def api_dispatch(self, request: Request) -> Response:
        """Route one (decoded) API request, checking the key where the route needs it."""
        resolved = self.api.resolve(request.method, request.path)
        if isinstance(resolved, Response):
            return resolved
        route, params = resolved
        if route.auth:
            denied = self.api.authenticate(request.headers)
            if denied is not None:
                return denied
        return route.handler(request, **params)

    # Faults --------------------------------------------------------------------------------

    def set_faults(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Replace the fault rules (first match wins); ``seed`` restarts the generator."""
        self._injector.configure(rules, seed=seed)

    def clear_faults(self) -> None:
        self._injector.clear()

    @property
    def faults(self) -> list[FaultRule]:
        return self._injector.rules

    @property
    def fault_seed(self) -> int:
        return self._injector.seed

    def set_url_signer(self, signer: Callable[[str], str | None] | None) -> None:
        """What ``get_sample(..., include_signed_url=True)`` signs: ``signer(url)`` is put in
        ``signed_url`` next to each image URL it returns a value for (``None``: none)."""
        self.api.url_signer = signer

    # Introspection -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        return self._log.records()

    def clear_requests(self) -> None:
        self._log.clear()

    def request_count(self, method: str | None = None, path: str = "*") -> int:
        """How many logged requests match ``method`` (``None``: any) and the ``path`` glob."""
        return self._log.count(method, path)

    def label_write_count(self, sample_uuid: str, labelset: str = GROUND_TRUTH) -> int:
        """How many times the API wrote this label (PUT and PATCH; human edits not counted)."""
        return self.store.label_write_count(sample_uuid, labelset)

    def label_write_counts(self) -> dict[tuple[str, str], int]:
        """API label writes per ``(sample_uuid, labelset)``."""
        return self.store.label_write_counts()

    def asset_upload_count(self) -> int:
        """Distinct assets whose bytes arrived through the presigned upload."""
        return self.store.asset_upload_count()

    @property
    def webhooks(self) -> WebhookSender:
        """The webhook sender (deliveries, pending, wait_idle); needs ``webhooks=`` at start."""
        if self._webhooks is None:
            raise RuntimeError("the emulator was started without webhooks")
        return self._webhooks

    # Direct state manipulation, as a human in the web app (or an admin) would --------------

    def create_dataset(
        self,
        full_name: str,
        *,
        task_type: str = "segmentation-bitmap",
        categories: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create ``owner/name`` without the SDK; returns the dataset as the API shows it."""
        owner, _, name = full_name.partition("/")
        body: dict[str, Any] = {"name": name, "task_type": task_type, **fields}
        if categories is not None:
            body["task_attributes"] = {"format_version": "0.1", "categories": categories}
        return self.api.dataset_json(self.api.create_dataset(owner, body))

    def add_labelset(self, full_name: str, name: str, description: str = "") -> None:
        owner, _, dataset_name = full_name.partition("/")
        dataset = self.store.get_dataset(owner, dataset_name)
        self.store.add_labelset(dataset.id, name, description)

    def add_asset(self, data: bytes, filename: str) -> str:
        """Store bytes as an uploaded asset and return its public URL."""
        extension, content_type = content_type_for(filename)
        key = self.store.create_asset(self.username, filename, extension, content_type)
        self.store.store_asset_data(key, data)
        return asset_url(key, self.url)

    def add_samples(self, full_name: str, samples: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert samples (dicts with ``name``, ``attributes``, optional ``metadata``,
        ``priority``) in one transaction; returns their uuids. Fast enough for 10,000."""
        owner, _, name = full_name.partition("/")
        dataset = self.store.get_dataset(owner, name)
        new = [
            NewSample(
                name=s["name"],
                attributes=dict(s["attributes"]),
                metadata=dict(s.get("metadata") or {}),
                priority=float(s.get("priority", 0)),
            )
            for s in samples
        ]
        return [record.uuid for record in self.api.insert_samples(dataset, new, self.url)]

    def add_image_sample(
        self,
        full_name: str,
        name: str,
        image_url: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Insert one image sample; returns its uuid."""
        sample = {"name": name, "attributes": {"image": {"url": image_url}}, "metadata": metadata}
        [sample_uuid] = self.add_samples(full_name, [sample])
        return sample_uuid

    def get_label(self, sample_uuid: str, labelset: str = GROUND_TRUTH) -> dict[str, Any] | None:
        """The label as ``GET /labels/...`` returns it, or ``None``; not logged, not counted."""
        label = self.store.get_label(sample_uuid, labelset)
        if label is None:
            return None
        return label_json(label, task_type_of(self._dataset_of(sample_uuid)), self.url)

    def write_label(
        self,
        sample_uuid: str,
        labelset: str,
        attributes: dict[str, Any] | None,
        *,
        label_status: str = "LABELED",
        score: float | None = None,
        by: str = "human-annotator",
    ) -> dict[str, Any] | None:
        """Create or replace a label as a human would (not counted by :meth:`label_write_count`).

        Any status is allowed, including ``LABELING_IN_PROGRESS`` which the API refuses;
        ``UNLABELED`` deletes the label and returns ``None``.
        """
        if self._unlabeled(sample_uuid, labelset, label_status):
            return None
        self.store.put_label(
            sample_uuid,
            labelset,
            label_status,
            None if attributes is None else portable_urls(attributes, self.url),
            score,
            by=by,
            count_write=False,
        )
        return self.get_label(sample_uuid, labelset)

    def set_label_status(
        self, sample_uuid: str, labelset: str, label_status: str, *, by: str = "human-annotator"
    ) -> dict[str, Any] | None:
        """Change only the status (creating an attribute-less label if there is none), as when
        an annotator opens, finishes or reviews a sample. ``UNLABELED`` deletes the label."""
        if self._unlabeled(sample_uuid, labelset, label_status):
            return None
        if self.store.get_label(sample_uuid, labelset) is None:
            self.store.put_label(
                sample_uuid, labelset, label_status, None, None, by=by, count_write=False
            )
        else:
            changes = {"label_status": label_status}
            self.store.patch_label(sample_uuid, labelset, changes, by=by, count_write=False)
        return self.get_label(sample_uuid, labelset)

    def _unlabeled(self, sample_uuid: str, labelset: str, label_status: str) -> bool:
        """Check a human edit's status and target; for ``UNLABELED``, delete the label (if any)
        and return True: the edit is done."""
        if label_status not in LABEL_STATUSES:
            raise ValueError(f"unknown label status {label_status!r}; use one of {LABEL_STATUSES}")
        self.api.label_target(sample_uuid, labelset)
        if label_status != UNLABELED:
            return False
        if self.store.get_label(sample_uuid, labelset) is not None:
            self.store.delete_label(sample_uuid, labelset)
            label = {"sample_uuid": sample_uuid, "labelset": labelset}
            self.api.emit("label.deleted", self._dataset_of(sample_uuid).full_name, label)
        return True

    def _dataset_of(self, sample_uuid: str) -> DatasetRecord:
        owner, _, name = self.store.get_sample(sample_uuid).dataset_full_name.partition("/")
        return self.store.get_dataset(owner, name)
