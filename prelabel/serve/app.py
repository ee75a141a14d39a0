"""The HTTP routes of ``prelabel serve`` (Starlette).

- ``POST /webhooks/segments``: the raw body goes to :meth:`Intake.admit` in a worker thread (it
  writes the message id to SQLite); the answer is 202 queued, 200 duplicate or ignored, 401 not
  authentic, 413 too large, 503 with ``Retry-After`` when full or stopping.
- ``GET /healthz``: 200 while the process serves (liveness).
- ``GET /readyz``: 200 when the models are loaded, the API answered recently and the service
  is not stopping; else 503. Both answer from memory, at once.
- ``GET /metrics``: the Prometheus text format.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prelabel.serve.intake import Answer
from prelabel.serve.metrics import CONTENT_TYPE
from prelabel.serve.service import Service

#: Segments' envelopes are a few kilobytes; anything far larger is not one.
MAX_BODY_BYTES = 1 << 20


def create_app(service: Service) -> Starlette:
    async def webhook(request: Request) -> Response:
        body = await _read_body(request, MAX_BODY_BYTES)
        if body is None:
            answer = service.intake.too_large(MAX_BODY_BYTES)
        else:
            answer = await run_in_threadpool(service.intake.admit, body, dict(request.headers))
        return _json(answer)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        ready, details = service.readiness.report()
        return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/webhooks/segments", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None once it is over ``limit`` bytes (without reading the rest)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json(answer: Answer) -> Response:
    headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s else None
    return JSONResponse(
        {"result": answer.result, "detail": answer.detail},
        status_code=answer.status,
        headers=headers,
    )
