"""Webhook alerts against a real HTTP receiver on 127.0.0.1: delivery, dedupe, retries on
503 and refused connections, no retry on 400, and a hanging webhook holding up one sender only.

No Kafka or Redis: the receiver is a tiny asyncio HTTP/1.1 server (one request per
connection) written here, so each case scripts its answers exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from pydantic import SecretStr

from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.notify import Format, Notification, Notifier, body
from hitl_gateway.settings import NotifySettings

from .webhook import Receiver, Request, answers, free_port

pytestmark = pytest.mark.integration

Answer = tuple[int, dict[str, str]]


@pytest.fixture(scope="session", autouse=True)
def _stack_is_up() -> None:
    """Overrides the package's check for the local Kafka and Redis: not used here."""


ALERT = Notification(
    key="item-1|escalation-1",
    kind="escalation",
    item_id="item-1",
    domain="support",
    pool="senior",
    from_pool="tier1",
    step=1,
    sla_deadline_ms=1_700_000_000_000,
    at_ms=1_700_000_060_000,
    message="item-1 waited past its SLA in tier1 and moved to senior",
)
WARNING = replace(
    ALERT, key="item-2|sla-warning", kind="sla_warning", item_id="item-2", from_pool=None, step=None
)


def settings(url: str, **overrides: object) -> NotifySettings:
    values: dict[str, object] = {
        "webhook_url": SecretStr(url),
        "timeout_s": 2.0,
        "max_attempts": 6,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        **overrides,
    }
    return NotifySettings.model_validate(values)


def counted(metrics: GatewayMetrics, kind: str, outcome: str) -> float:
    labels = {"kind": kind, "outcome": outcome}
    return metrics.registry.get_sample_value("hitl_notifications_total", labels) or 0.0


def attempts(metrics: GatewayMetrics, kind: str) -> float:
    labels = {"kind": kind}
    return metrics.registry.get_sample_value("hitl_notification_attempts_total", labels) or 0.0


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.mark.parametrize("fmt", ["json", "slack"])
async def test_one_post_per_notification_and_a_repeated_key_is_not_sent(
    receiver: Receiver, metrics: GatewayMetrics, fmt: Format
) -> None:
    async with Notifier(settings(receiver.url, format=fmt), metrics) as notifier:
        notifier.notify(ALERT)
        notifier.notify(WARNING)
        notifier.notify(replace(ALERT, message="rebuilt by a second sweep"))
        assert counted(metrics, "escalation", "duplicate") == 1
        await eventually(lambda: len(receiver.requests) == 2, "both alerts received")
        notifier.notify(ALERT)  # after delivery too
    # stop() drained the queue: nothing else was on its way.
    assert len(receiver.requests) == 2
    assert counted(metrics, "escalation", "duplicate") == 2
    assert counted(metrics, "escalation", "sent") == counted(metrics, "sla_warning", "sent") == 1
    by_body = {r.body: r for r in receiver.requests}
    assert set(by_body) == {body(ALERT, fmt), body(WARNING, fmt)}
    for request in receiver.requests:
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["content-type"] == "application/json"


async def test_503_twice_then_200_is_sent_once_after_three_attempts(
    receiver: Receiver, metrics: GatewayMetrics
) -> None:
    receiver.respond = answers(503, 503)
    async with Notifier(settings(receiver.url), metrics) as notifier:
        notifier.notify(ALERT)
        await eventually(lambda: counted(metrics, "escalation", "sent") == 1, "sent")
    assert [r.key for r in receiver.requests] == [ALERT.key] * 3
    assert attempts(metrics, "escalation") == 3
    assert counted(metrics, "escalation", "failed") == 0


async def test_retry_after_replaces_the_backoff(
    receiver: Receiver, metrics: GatewayMetrics
) -> None:
    # A 30 s backoff would outlast the deadline below: only Retry-After: 0 delivers in time.
    receiver.respond = answers(429, headers={"retry-after": "0"})
    cfg = settings(receiver.url, backoff_initial_s=30.0, backoff_max_s=30.0)
    async with Notifier(cfg, metrics) as notifier:
        notifier.notify(ALERT)
        await eventually(lambda: counted(metrics, "escalation", "sent") == 1, "sent")
    assert attempts(metrics, "escalation") == 2


async def test_400_is_not_retried(receiver: Receiver, metrics: GatewayMetrics) -> None:
    receiver.respond = answers(400, 400, 400)
    async with Notifier(settings(receiver.url), metrics) as notifier:
        notifier.notify(ALERT)
        await eventually(lambda: counted(metrics, "escalation", "failed") == 1, "failed")
    assert len(receiver.requests) == 1
    assert attempts(metrics, "escalation") == 1
    assert counted(metrics, "escalation", "sent") == 0


async def test_delivered_once_the_receiver_starts_listening(metrics: GatewayMetrics) -> None:
    receiver = Receiver(port=free_port())
    cfg = settings(receiver.url, max_attempts=50, backoff_initial_s=0.05, backoff_max_s=0.1)
    try:
        async with Notifier(cfg, metrics) as notifier:
            notifier.notify(ALERT)
            # Connections refused for about half a second, then the receiver listens.
            await eventually(lambda: attempts(metrics, "escalation") >= 4, "refused attempts")
            await receiver.start()
            await eventually(lambda: counted(metrics, "escalation", "sent") == 1, "sent")
    finally:
        await receiver.stop()
    assert [r.key for r in receiver.requests] == [ALERT.key]
    assert attempts(metrics, "escalation") >= 5
    assert counted(metrics, "escalation", "failed") == 0


async def test_a_hanging_webhook_holds_up_one_sender_only(
    receiver: Receiver, metrics: GatewayMetrics
) -> None:
    async def respond(request: Request) -> Answer:
        if request.key == ALERT.key:
            await asyncio.sleep(10)
        return 200, {}

    receiver.respond = respond
    cfg = settings(receiver.url, timeout_s=0.3, max_attempts=100)
    async with Notifier(cfg, metrics, stop_budget_s=0.2) as notifier:
        notifier.notify(ALERT)
        await eventually(lambda: len(receiver.requests) >= 1, "the first alert's request")
        notifier.notify(WARNING)
        await eventually(lambda: counted(metrics, "sla_warning", "sent") == 1, "second sent")
        # The first is still being retried against the hanging receiver.
        assert counted(metrics, "escalation", "sent") == 0
        assert counted(metrics, "escalation", "failed") == 0
    assert WARNING.key in [r.key for r in receiver.requests]
    # Stopping gave up on it within its budget and counted it.
    assert counted(metrics, "escalation", "dropped") == 1
