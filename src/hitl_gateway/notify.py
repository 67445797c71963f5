"""Webhook alerts about held items (escalations, SLA warnings), sent after the sweep commits.

Best effort and at most once per key: ``notify`` only queues, so a slow or failing webhook
never holds up the sweeper; a few sender tasks drain the bounded queue with retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Self

import httpx
import orjson
import structlog

from hitl_gateway import __version__
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.settings import NotifySettings

log = structlog.get_logger(__name__)

Kind = Literal["escalation", "sla_warning"]
Format = Literal["slack", "json"]
SOURCE = "hitl-gateway"

_SENDERS = 4  # a hanging webhook call holds up one sender, not the queue
_REMEMBERED_KEYS = 100_000  # dedupe memory bound: the oldest keys are forgotten first
_JITTER = 0.2  # delays shortened by up to 20%: senders retrying together spread out
_SLACK_SECTION_CHARS = 3_000  # Slack refuses (400) a section text longer than this
_LABELS = {"escalation": "Escalation", "sla_warning": "SLA warning"}


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert. ``key`` dedupes it (e.g. ``"{item_id}|escalation-1"``); ``pool`` is the
    pool the item waits in now, ``from_pool`` and ``step`` are set for escalations."""

    key: str
    kind: Kind
    item_id: str
    domain: str
    pool: str
    from_pool: str | None
    step: int | None
    sla_deadline_ms: int
    at_ms: int
    message: str


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, to the second (``2023-11-14T22:13:20Z``)."""
    moment = datetime.fromtimestamp(ms / 1_000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions; ids and pools are shown as typed.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(n: Notification) -> dict[str, object]:
    deadline = iso_utc(n.sla_deadline_ms)
    item, pool = _slack_escape(n.item_id), _slack_escape(n.pool)
    text = f"{_LABELS[n.kind]}: item {item} waits in pool {pool}, SLA deadline {deadline}"
    moved = f" (from {_slack_escape(n.from_pool)})" if n.from_pool is not None else ""
    section = (
        f"*{_LABELS[n.kind]}*: {_slack_escape(n.message)}\n"
        f"*Item:* `{item}`\n*Domain:* {_slack_escape(n.domain)}\n"
        f"*Pool:* {pool}{moved}\n*SLA deadline:* {deadline}"
    )
    if len(section) > _SLACK_SECTION_CHARS:
        section = section[: _SLACK_SECTION_CHARS - 1] + "…"
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}],
    }


def body(n: Notification, fmt: Format) -> bytes:
    """The request body: every field flat (``json``) or a Slack incoming-webhook message."""
    if fmt == "slack":
        return orjson.dumps(_slack(n))
    return orjson.dumps({**dataclasses.asdict(n), "source": SOURCE})


def retry_after_s(value: str | None, cap_s: float) -> float | None:
    """A ``Retry-After`` header given in seconds, capped at ``cap_s``; None when absent or
    not a number of seconds (the HTTP-date form falls back to the backoff)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(seconds, cap_s) if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class _Attempt:
    sent: bool
    retriable: bool
    error: str | None = None
    wait_s: float | None = None  # the server's Retry-After, when it gave one


class Notifier:
    """Queues notifications and POSTs them to the webhook from a few sender tasks."""

    def __init__(
        self, settings: NotifySettings, metrics: GatewayMetrics, *, stop_budget_s: float = 2.0
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._stop_budget_s = stop_budget_s
        self._url = settings.webhook_url.get_secret_value() if settings.webhook_url else None
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=settings.queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._senders: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._senders or self._url is None:
            return
        self._stopping = False
        self._client = httpx.AsyncClient(
            timeout=self._settings.timeout_s,
            headers={"content-type": "application/json", "user-agent": f"{SOURCE}/{__version__}"},
        )
        self._senders = [
            asyncio.create_task(self._drain(), name=f"notify-sender-{i}") for i in range(_SENDERS)
        ]

    async def stop(self) -> None:
        """Deliver what the budget allows, then count whatever is left as dropped."""
        self._stopping = True
        senders, self._senders = self._senders, []
        if senders:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self._stop_budget_s)
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "stopping")
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def notify(self, n: Notification) -> None:
        """Queue ``n`` for delivery; never blocks or raises. A key seen before is ignored; a
        full queue drops ``n`` (counted) rather than slow the caller."""
        if n.key in self._seen:
            self._count(n, "duplicate")
            return
        if self._url is None:
            self._remember(n.key)
            self._count(n, "disabled")
            return
        if self._stopping:
            self._drop(n, "stopping")
            return
        try:
            self._queue.put_nowait(n)
        except asyncio.QueueFull:
            self._drop(n, "queue_full")  # not remembered: a later call may still send it
            return
        self._remember(n.key)

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        if len(self._seen) > _REMEMBERED_KEYS:
            self._seen.popitem(last=False)

    def _count(self, n: Notification, outcome: str) -> None:
        self._metrics.notifications.labels(kind=n.kind, outcome=outcome).inc()

    def _drop(self, n: Notification, reason: str) -> None:
        self._count(n, "dropped")
        log.warning("notification_dropped", kind=n.kind, key=n.key, reason=reason)

    async def _drain(self) -> None:
        while True:
            n = await self._queue.get()
            try:
                await self._deliver(n)
            except asyncio.CancelledError:
                self._drop(n, "stopping")
                raise
            except Exception:  # a bug must not silently end this sender
                self._count(n, "failed")
                log.exception("notification_error", kind=n.kind, key=n.key)
            finally:
                self._queue.task_done()

    async def _deliver(self, n: Notification) -> None:
        s = self._settings
        payload = body(n, s.format)
        delay_s = s.backoff_initial_s
        for attempt in range(1, s.max_attempts + 1):
            self._metrics.notification_attempts.labels(kind=n.kind).inc()
            result = await self._post(payload)
            if result.sent:
                self._count(n, "sent")
                return
            if not result.retriable or attempt == s.max_attempts:
                self._count(n, "failed")
                log.warning(
                    "notification_failed",
                    kind=n.kind,
                    key=n.key,
                    attempts=attempt,
                    error=result.error,
                    retriable=result.retriable,
                )
                return
            jittered_s = delay_s * (1 - _JITTER * random.random())  # noqa: S311 - not crypto
            await asyncio.sleep(result.wait_s if result.wait_s is not None else jittered_s)
            delay_s = min(delay_s * 2, s.backoff_max_s)

    async def _post(self, payload: bytes) -> _Attempt:
        """One HTTP attempt. Connection failures, timeouts, 429 and 5xx are worth retrying;
        any other non-2xx answer will not change."""
        assert self._client is not None
        assert self._url is not None
        try:
            response = await self._client.post(self._url, content=payload)
        except httpx.TransportError as exc:  # connect, read, write and pool errors, timeouts
            return _Attempt(sent=False, retriable=True, error=type(exc).__name__)
        except httpx.HTTPError as exc:  # e.g. an undecodable answer: retrying will not help
            return _Attempt(sent=False, retriable=False, error=type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return _Attempt(sent=True, retriable=False)
        wait_s = None
        if status in (429, 503):
            wait_s = retry_after_s(
                response.headers.get("retry-after"), self._settings.backoff_max_s
            )
        retriable = status == 429 or status >= 500
        return _Attempt(sent=False, retriable=retriable, error=f"http_{status}", wait_s=wait_s)
