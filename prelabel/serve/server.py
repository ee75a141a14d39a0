"""Run a :class:`Service` behind uvicorn, with SIGTERM meaning "drain, then exit".

uvicorn's own handling closes the listening socket at once and, after shutting down, raises
the signal again with the previous handler (so the process would die of SIGTERM, not exit 0).
Here the first SIGTERM or SIGINT starts the service's drain: the server keeps answering (503
for deliveries, 503 from ``/readyz`` so the load balancer moves away, 200 from ``/healthz``),
samples in progress finish, and only then does the server stop. A second signal does not cut
this short, as in ``prelabel sync``; ``kill -9`` is safe too (the next start resumes).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from prelabel.serve.app import create_app
from prelabel.serve.service import Service

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self._service = service
        service.on_drained(self._exit)

    def _exit(self) -> None:
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (a server started by a test)
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._service.readiness.draining:
            logger.warning("%s again: still finishing the samples in progress", name)
            return
        logger.warning("%s received", name)
        self._service.begin_drain()


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: a free one), so errors surface before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio turns Nagle off on accepted connections only
    # when the protocol is set, and with Nagle on each answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(service: Service, sock: socket.socket, *, access_log: bool = False) -> None:
    """Start the service and answer HTTP on ``sock`` until it has drained."""
    config = uvicorn.Config(
        create_app(service),
        log_config=None,  # the CLI configured logging (text or JSON); uvicorn propagates to it
        access_log=access_log,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _DrainingServer(config, service)
    service.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.begin_drain()
        service.wait_drained()
