"""A real webhook receiver for tests: a tiny asyncio HTTP/1.1 server on 127.0.0.1 (one
request per connection) that records every request and answers as each test scripts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

Answer = tuple[int, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return str(orjson.loads(self.body)["key"])


async def _ok(_: Request) -> Answer:
    return 200, {}


@dataclass
class Receiver:
    """Records every request, then answers it with ``respond``'s status and headers."""

    port: int = 0
    respond: Callable[[Request], Awaitable[Answer]] = _ok
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[object]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        # Hanging handlers are cancelled: a closing server waits for its connections.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
            content = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, content)
            self.requests.append(request)
            status, extra = await self.respond(request)
            fields = {"content-length": "0", "connection": "close", **extra}
            writer.write(
                f"HTTP/1.1 {status} X\r\n".encode()
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in fields.items())
                + b"\r\n"
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up (its timeout) before the answer
        finally:
            self._handlers.discard(task)
            writer.close()


def answers(
    *statuses: int, headers: dict[str, str] | None = None
) -> Callable[[Request], Awaitable[Answer]]:
    """Answer the first requests with ``statuses`` in order, then 200."""
    pending = list(statuses)

    async def respond(_: Request) -> Answer:
        return (pending.pop(0), headers or {}) if pending else (200, {})

    return respond


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
