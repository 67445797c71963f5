"""Webhook alerts without a network: the two body formats, dedupe by key, queue-full drops."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.notify import Notification, Notifier, body, retry_after_s
from hitl_gateway.settings import NotifySettings, Settings

DEADLINE_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
ESCALATION = Notification(
    key="item-7|escalation-1",
    kind="escalation",
    item_id="item-7",
    domain="support",
    pool="senior",
    from_pool="tier1",
    step=1,
    sla_deadline_ms=DEADLINE_MS,
    at_ms=DEADLINE_MS + 60_000,
    message="item-7 waited past its SLA in tier1 and moved to senior",
)


def _with_webhook(queue_size: int = 1_000) -> NotifySettings:
    # Port 9 (discard): never contacted, these notifiers are not started.
    return NotifySettings(webhook_url=SecretStr("http://127.0.0.1:9/hook"), queue_size=queue_size)


def _counted(metrics: GatewayMetrics, kind: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "hitl_notifications_total", {"kind": kind, "outcome": outcome}
    )
    assert value is not None
    return value


def test_json_body_is_every_field_flat_plus_the_source() -> None:
    doc = orjson.loads(body(ESCALATION, "json"))
    assert doc == {
        "key": "item-7|escalation-1",
        "kind": "escalation",
        "item_id": "item-7",
        "domain": "support",
        "pool": "senior",
        "from_pool": "tier1",
        "step": 1,
        "sla_deadline_ms": DEADLINE_MS,
        "at_ms": DEADLINE_MS + 60_000,
        "message": ESCALATION.message,
        "source": "hitl-gateway",
    }


def test_json_body_keeps_nulls_of_an_sla_warning() -> None:
    warning = replace(ESCALATION, key="item-7|sla-warning", kind="sla_warning", from_pool=None)
    doc = orjson.loads(body(replace(warning, step=None), "json"))
    assert (doc["kind"], doc["from_pool"], doc["step"]) == ("sla_warning", None, None)


def test_slack_body_is_an_incoming_webhook_message() -> None:
    doc = orjson.loads(body(ESCALATION, "slack"))
    assert set(doc) == {"text", "blocks"}
    text = doc["text"]
    assert "\n" not in text
    assert "item-7" in text
    assert "senior" in text
    assert "2023-11-14T22:13:20Z" in text
    [block] = doc["blocks"]
    assert block["type"] == "section"
    assert block["text"]["type"] == "mrkdwn"
    section = block["text"]["text"]
    for part in ("item-7", "support", "senior", "tier1", "2023-11-14T22:13:20Z"):
        assert part in section


def test_slack_body_escapes_what_slack_would_read_as_markup() -> None:
    odd = replace(ESCALATION, item_id="<!channel> & co", message="x" * 5_000)
    doc = orjson.loads(body(odd, "slack"))
    assert "<!channel>" not in doc["text"]
    assert "&lt;!channel&gt; &amp; co" in doc["text"]
    assert len(doc["blocks"][0]["text"]["text"]) <= 3_000


def test_retry_after_reads_seconds_and_caps_them() -> None:
    assert retry_after_s("2", 30.0) == 2.0
    assert retry_after_s(" 120 ", 30.0) == 30.0
    assert retry_after_s(None, 30.0) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 30.0) is None
    assert retry_after_s("-1", 30.0) is None
    assert retry_after_s("nan", 30.0) is None


def test_a_repeated_key_is_accepted_once() -> None:
    metrics = GatewayMetrics()
    notifier = Notifier(_with_webhook(), metrics)
    notifier.notify(ESCALATION)
    notifier.notify(replace(ESCALATION, message="the same alert, rebuilt"))
    notifier.notify(replace(ESCALATION, key="item-7|escalation-2", step=2))
    assert _counted(metrics, "escalation", "duplicate") == 1
    assert _counted(metrics, "escalation", "dropped") == 0


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    metrics = GatewayMetrics()
    notifier = Notifier(_with_webhook(queue_size=2), metrics)  # not started: nothing drains
    for n in range(5):
        notifier.notify(replace(ESCALATION, key=f"item-{n}|escalation-1"))
    assert _counted(metrics, "escalation", "dropped") == 3
    # A dropped key was never accepted, so it is not a duplicate later on.
    notifier.notify(replace(ESCALATION, key="item-4|escalation-1"))
    assert _counted(metrics, "escalation", "duplicate") == 0
    assert _counted(metrics, "escalation", "dropped") == 4


async def test_stop_counts_what_was_never_sent_as_dropped() -> None:
    metrics = GatewayMetrics()
    notifier = Notifier(_with_webhook(), metrics)
    notifier.notify(ESCALATION)
    await notifier.stop()
    assert _counted(metrics, "escalation", "dropped") == 1
    notifier.notify(replace(ESCALATION, key="after-stop"))
    assert _counted(metrics, "escalation", "dropped") == 2


def test_without_a_webhook_alerts_are_only_counted() -> None:
    metrics = GatewayMetrics()
    notifier = Notifier(NotifySettings(), metrics)
    notifier.notify(ESCALATION)
    notifier.notify(ESCALATION)
    assert _counted(metrics, "escalation", "disabled") == 1
    assert _counted(metrics, "escalation", "duplicate") == 1


def test_notify_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_NOTIFY__WEBHOOK_URL", "https://hooks.example/T000/B000/secret")
    monkeypatch.setenv("HITL_NOTIFY__FORMAT", "slack")
    notify = Settings().notify
    assert notify.format == "slack"
    assert notify.webhook_url is not None
    assert "B000/secret" not in Settings().model_dump_json()  # the URL, masked


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="http"):
        NotifySettings(webhook_url=SecretStr("hooks.example/T000"))
    with pytest.raises(ValidationError):
        NotifySettings(sla_warning_share=1.0)
