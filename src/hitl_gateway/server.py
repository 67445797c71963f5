"""The gateway's HTTP server (uvicorn in the gateway's own event loop): ``/metrics``, the
health probes and the review API.

It shares the event loop with the stream, so no request may hold it: bodies are bounded
(``BodyLimit``) before anything parses them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, MutableMapping, Sequence
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hitl_gateway import __version__
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.settings import HttpSettings

log = structlog.get_logger(__name__)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# How much of an oversized body is read and dropped so the client, still sending, gets the
# 413 instead of a reset connection; past this the connection is closed on it.
_DRAIN_BYTES = 64 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 (naming the limit)
    as soon as its declared length or its received bytes exceed it; it is never buffered
    (what the client still sends is dropped as it arrives). A body within the limit is read,
    then handed on unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            await self._refuse(receive, send, int(declared), more=True)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self._max_bytes:
                await self._refuse(receive, send, size, more=more)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    async def _refuse(self, receive: Receive, send: Send, size: int, *, more: bool) -> None:
        dropped = 0
        while more and dropped < _DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)
        detail = f"request body is {size} bytes or more, limit {self._max_bytes}"
        payload = b'{"detail":"' + detail.encode() + b'"}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


def build_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    routers: Sequence[APIRouter] = (),
    *,
    max_body_bytes: int = 1_064_576,
) -> FastAPI:
    """``max_body_bytes``: the largest request body read (a decision carrying an edit of a
    maximum-size record, with room for its other fields)."""
    app = FastAPI(title="hitl-gateway", version=__version__)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(InfrastructureError)
    async def unavailable(_: Request, exc: InfrastructureError) -> JSONResponse:
        """Kafka or Redis unavailable anywhere in a request: 503 with a retry hint."""
        detail = f"temporarily unavailable, retry: {exc}"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    for router in routers:
        app.include_router(router)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, str]:
        if ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "not ready"}

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the composition root owns SIGTERM/SIGINT
    (uvicorn would capture them and re-raise them on exit, which reads as a second signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    def __init__(self, settings: HttpSettings, app: FastAPI) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._server.serve(), name="http-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # surfaces a bind error
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("http_server_started", port=self.port)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._server.config.port

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._server.should_exit = True
            await task
