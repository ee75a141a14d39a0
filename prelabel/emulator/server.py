"""The HTTP server and the :class:`Emulator` that owns it.

Standard library only (``http.server``): one thread per connection, HTTP/1.1 keep-alive like the
real service, and gzip request bodies decoded as the SDK sends them. The handler reads each
request completely, asks the fault injector what to do with it, then either misbehaves (latency,
429, 5xx, dropped or hung connection) or hands it to :mod:`prelabel.emulator.api`. Every request
the SDK makes is recorded in the request log; the ``/_emulator/`` side channel is not.
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import socket
import socketserver
import threading
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from types import TracebackType
from typing import Any

from prelabel.emulator import control
from prelabel.emulator.api import (
    LABEL_STATUSES,
    ApiError,
    Request,
    Response,
    SegmentsApi,
    detail_response,
    json_response,
    portable_urls,
)
from prelabel.emulator.faults import FaultDecision, FaultInjector, FaultRule, throttled_detail
from prelabel.emulator.s3 import content_type_for
from prelabel.emulator.store import (
    GROUND_TRUTH,
    UNLABELED,
    Conflict,
    DatasetRecord,
    NewSample,
    NotFound,
    Store,
)
from prelabel.emulator.webhooks import WebhookConfig, WebhookSender

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "emulator-key"
DEFAULT_USERNAME = "jane"

# Bodies of injected 5xx answers, as a Django app behind a load balancer would send them. None of
# them contains a phrase the SDK maps to a special exception, so all become NetworkError.
_ERROR_PAGES: Mapping[int, bytes] = {
    500: b"<h1>Server Error (500)</h1>",
    502: b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: b"<html><head><title>503 Service Unavailable</title></head>"
    b"<body>503 Service Temporarily Unavailable</body></html>",
}


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator received (the side channel excluded).

    ``status`` is ``None`` when no answer was sent (``fault`` ``"drop"`` or ``"hang"``); ``fault``
    names the injected failure (``"error"``, ``"throttle"``, ``"drop"``, ``"hang"``) or is
    ``None`` for a normal answer.
    """

    method: str
    path: str
    query: str
    status: int | None
    fault: str | None


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can close its open keep-alive connections on stop.

    Without that, a handler thread waiting for the next request on a client's pooled connection
    would outlive :meth:`Emulator.stop`.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._active = 0
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall for
        # seconds on machines without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            self._connections.add(request)
            self._active += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._idle:
            if request in self._connections:
                self._connections.discard(request)
                self._active -= 1
                self._idle.notify_all()
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        """Shut down every open connection and wait (bounded) for their threads to finish."""
        with self._idle:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError as error:  # already closed by the peer
                logger.debug("closing connection: %s", error)
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.error("unhandled error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "segments-emulator"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
    # add ~40 ms to every response.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _handle(self) -> None:
        emulator = self.server.emulator
        split = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        host = headers.get("host") or f"{emulator.host}:{emulator.port}"
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        request = Request(self.command, split.path, query, headers, body, f"http://{host}/")

        if split.path.startswith(control.PREFIX):
            self._send(_guarded(lambda: control.handle(emulator, request)))
            return

        decision = emulator._injector.decide(self.command, split.path)
        if decision.latency_s > 0:
            emulator._stopping.wait(decision.latency_s)
        if decision.kind in {"drop", "hang"}:
            emulator._record(
                RequestRecord(self.command, split.path, split.query, None, decision.kind)
            )
            if decision.kind == "hang":
                emulator._stopping.wait(decision.hang_s)
            # No status line at all: the client sees the connection close under it.
            self.close_connection = True
            return
        response = _fault_response(decision) if decision.kind else None
        if response is None:
            response = _guarded(lambda: emulator.api_dispatch(_decoded(request)))
        # Record before answering: once the client has its answer, a test may read the log.
        emulator._record(
            RequestRecord(self.command, split.path, split.query, response.status, decision.kind)
        )
        self._send(response)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0  # the SDK always sends a valid length; treat garbage as no body
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError) as error:
            logger.debug("client went away before the answer: %s", error)
            self.close_connection = True


def _fault_response(decision: FaultDecision) -> Response:
    if decision.kind == "throttle":
        return json_response(
            429,
            {"detail": throttled_detail(decision.retry_after_s)},
            [("Retry-After", str(decision.retry_after_s))],
        )
    status = decision.status or 500
    page = _ERROR_PAGES.get(status, f"<h1>Error ({status})</h1>".encode())
    return Response(status, page, "text/html")


def _decoded(request: Request) -> Request:
    """The request with a gzip body inflated (the SDK gzips sample and label writes)."""
    if request.headers.get("content-encoding", "").lower() != "gzip":
        return request
    try:
        body = gzip.decompress(request.body)
    except (OSError, EOFError, zlib.error) as error:
        raise ApiError(400, {"detail": f"Malformed gzip body: {error}"}) from error
    return Request(
        request.method, request.path, request.query, request.headers, body, request.base_url
    )


def _guarded(answer: Any) -> Response:
    """Turn the API layer's exceptions into the error bodies a DRF server sends."""
    try:
        return answer()
    except ApiError as error:
        return json_response(error.status, error.body)
    except NotFound as error:
        return detail_response(404, str(error))
    except Conflict as error:
        return detail_response(400, str(error))
    except Exception:
        # A bug in the emulator: answer like a crashing server and keep the traceback.
        logger.exception("emulator failed to handle a request")
        return detail_response(500, "Internal emulator error.")


class Emulator:
    """A local Segments.ai REST API on ``http://host:port/`` for the real ``segments-ai`` SDK.

    State lives in memory, or in the SQLite file ``db_path`` so it survives a restart (asset
    URLs are stored without host and port, so a restart on another port keeps them valid).
    ``faults`` and ``seed`` configure fault injection at start; :meth:`set_faults` changes it at
    runtime. The request log is kept in memory only. An emulator is started once:
    ``start()``/``stop()`` or ``with Emulator() as emu:``.

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
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._server: _Server | None = None
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
        self._server = _Server((self.host, self._requested_port), self)
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
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for ``SegmentsClient(api_url=...)``, e.g. ``http://127.0.0.1:54321/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def store(self) -> Store:
        """The state, for tests that need more than the helpers below."""
        if self._store is None:
            raise RuntimeError("the emulator is not running")
        return self._store

    @property
    def api(self) -> SegmentsApi:
        if self._api is None:
            raise RuntimeError("the emulator is not running")
        return self._api

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

    # Introspection -------------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(record)
        logger.debug("%s %s -> %s (%s)", record.method, record.path, record.status, record.fault)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def request_count(self, method: str | None = None, path: str = "*") -> int:
        """How many logged requests match ``method`` (``None``: any) and the ``path`` glob."""
        return sum(
            1
            for record in self.requests
            if (method is None or record.method == method.upper())
            and fnmatch.fnmatchcase(record.path, path)
        )

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
        return self.api.asset_url(key, self.url)

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
        dataset = self._dataset_of(sample_uuid)
        task_type = dataset.fields.get("task_type", "segmentation-bitmap")
        return self.api.label_json(label, task_type, self.url)

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
        self._check_status(label_status)
        self.api.label_target(sample_uuid, labelset)
        if label_status == UNLABELED:
            self._delete_label_if_any(sample_uuid, labelset)
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
        self._check_status(label_status)
        self.api.label_target(sample_uuid, labelset)
        if label_status == UNLABELED:
            self._delete_label_if_any(sample_uuid, labelset)
            return None
        if self.store.get_label(sample_uuid, labelset) is None:
            self.store.put_label(
                sample_uuid, labelset, label_status, None, None, by=by, count_write=False
            )
        else:
            changes = {"label_status": label_status}
            self.store.patch_label(sample_uuid, labelset, changes, by=by, count_write=False)
        return self.get_label(sample_uuid, labelset)

    @staticmethod
    def _check_status(label_status: str) -> None:
        if label_status not in LABEL_STATUSES:
            raise ValueError(f"unknown label status {label_status!r}; use one of {LABEL_STATUSES}")

    def _delete_label_if_any(self, sample_uuid: str, labelset: str) -> None:
        if self.store.get_label(sample_uuid, labelset) is not None:
            self.store.delete_label(sample_uuid, labelset)
            label = {"sample_uuid": sample_uuid, "labelset": labelset}
            self.api.emit("label.deleted", self._dataset_of(sample_uuid).full_name, label)

    def _dataset_of(self, sample_uuid: str) -> DatasetRecord:
        owner, _, name = self.store.get_sample(sample_uuid).dataset_full_name.partition("/")
        return self.store.get_dataset(owner, name)
