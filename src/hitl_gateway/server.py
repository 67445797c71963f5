"""The gateway's HTTP server (uvicorn in the gateway's own event loop): ``/metrics``, health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Sequence

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hitl_gateway import __version__
from hitl_gateway.settings import HttpSettings

log = structlog.get_logger(__name__)


def build_app(
    registry: CollectorRegistry, ready: Callable[[], bool], routers: Sequence[APIRouter] = ()
) -> FastAPI:
    app = FastAPI(title="hitl-gateway", version=__version__)
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
