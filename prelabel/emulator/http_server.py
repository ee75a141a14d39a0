"""The HTTP server: reads each request, injects faults, and answers through the API layer.

Standard library only (``http.server``): one thread per connection, HTTP/1.1 keep-alive like the
real service, and gzip request bodies decoded as the SDK sends them. The handler reads each
request completely, asks the fault injector what to do with it, then either misbehaves (latency,
429, 5xx, dropped or hung connection) or hands it to :mod:`prelabel.emulator.api`. Every request
the SDK makes is recorded in the request log; the ``/_emulator/`` side channel is not.

The server never sees the :class:`~.server.Emulator` class: it gets the fault injector, the
stop event and the request log it needs, plus the emulator as a :class:`Served` protocol, so the
facade can own the server without the two importing each other.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prelabel.emulator import control
from prelabel.emulator.faults import FaultDecision, FaultInjector, throttled_detail
from prelabel.emulator.requestlog import RequestLog, RequestRecord
from prelabel.emulator.store.records import Conflict, NotFound
from prelabel.emulator.wire import (
    ApiError,
    Request,
    Response,
    decoded,
    detail_response,
    json_response,
)

logger = logging.getLogger(__name__)

# Bodies of injected 5xx answers, as a Django app behind a load balancer would send them. None of
# them contains a phrase the SDK maps to a special exception, so all become NetworkError.
_ERROR_PAGES: Mapping[int, bytes] = {
    500: b"<h1>Server Error (500)</h1>",
    502: b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: b"<html><head><title>503 Service Unavailable</title></head>"
    b"<body>503 Service Temporarily Unavailable</body></html>",
}


class Served(control.Controlled, Protocol):
    """What the server needs from the emulator that owns it: its address and the API."""

    host: str

    @property
    def port(self) -> int: ...

    def api_dispatch(self, request: Request) -> Response: ...


class HttpServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its open keep-alive connections on stop.

    Without that, a handler thread waiting for the next request on a client's pooled connection
    would outlive :meth:`Emulator.stop`.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        emulator: Served,
        injector: FaultInjector,
        stopping: threading.Event,
        log: RequestLog,
    ) -> None:
        self.emulator = emulator
        self.injector = injector
        self.stopping = stopping
        self.log = log
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
    server: HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "segments-emulator"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
    # add ~40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _handle(self) -> None:
        server = self.server
        emulator = server.emulator
        split = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        host = headers.get("host") or f"{emulator.host}:{emulator.port}"
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        request = Request(self.command, split.path, query, headers, body, f"http://{host}/")

        if split.path.startswith(control.PREFIX):
            self._send(_guarded(lambda: control.handle(emulator, request)))
            return

        decision = server.injector.decide(self.command, split.path)
        if decision.latency_s > 0:
            server.stopping.wait(decision.latency_s)
        if decision.kind in {"drop", "hang"}:
            server.log.record(
                RequestRecord(self.command, split.path, split.query, None, decision.kind)
            )
            if decision.kind == "hang":
                server.stopping.wait(decision.hang_s)
            # No status line at all: the client sees the connection close under it.
            self.close_connection = True
            return
        response = _fault_response(decision) if decision.kind else None
        if response is None:
            response = _guarded(lambda: emulator.api_dispatch(decoded(request)))
        # Record before answering: once the client has its answer, a test may read the log.
        server.log.record(
            RequestRecord(self.command, split.path, split.query, response.status, decision.kind)
        )
        self._send(response)

    # BaseHTTPRequestHandler calls do_<METHOD>; every method the API has goes the same way.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

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


def _guarded(answer: Callable[[], Response]) -> Response:
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
