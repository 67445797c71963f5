"""Reading the audit trail back: export (all, one item, one period), an export read again,
and the audit topic's retention (what verification allows to be missing at the front)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hitl_gateway.audit_verify import Record
from hitl_gateway.errors import InfrastructureError, kafka_errors
from hitl_gateway.recovery import Reader
from hitl_gateway.settings import Settings


async def read_trail(settings: Settings) -> list[Record]:
    """Every committed audit event as (partition, offset, value), in order per partition."""
    admin = AIOKafkaAdminClient(**settings.kafka.admin_options())
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([settings.topics.audit])
    finally:
        await admin.close()
    reader = Reader(settings.kafka)
    await reader.start()
    out: list[Record] = []
    try:
        for p in sorted(part["partition"] for part in meta["partitions"]):
            records, _ = await reader.read(TopicPartition(settings.topics.audit, p), None, 600)
            out += [(p, r.offset, r.value) for r in records]
    finally:
        await reader.stop()
    return out


async def topic_retention(settings: Settings) -> tuple[int | None, str]:
    """The audit topic's ``retention.ms`` (-1: unlimited), or None with the reason when
    retention by time cannot say what is missing (a size limit deletes young events too)."""
    topic = settings.topics.audit
    admin = AIOKafkaAdminClient(**settings.kafka.admin_options())
    with kafka_errors(f"describing topic {topic}"):
        await admin.start()
        try:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        finally:
            await admin.close()
    error, message, _, _, entries = response.resources[0][:5]
    if error:
        raise InfrastructureError(f"describing topic {topic}'s configs failed ({error}): {message}")
    configs = {e[0]: e[1] for e in entries}
    if int(configs.get("retention.bytes") or -1) >= 0:
        return None, f"topic {topic} has retention.bytes set: retention not checked"
    return int(configs.get("retention.ms") or -1), f"topic {topic}'s retention.ms"


def select(
    trail: list[Record],
    *,
    item_id: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Export lines: the event with its coordinates, so a copy can be verified on its own."""
    for partition, offset, value in trail:
        event = orjson.loads(value or b"{}")
        if item_id is not None and event.get("item_id") != item_id:
            continue
        at = event.get("at_ms") or 0
        if (since_ms is not None and at < since_ms) or (until_ms is not None and at >= until_ms):
            continue
        yield {"partition": partition, "offset": offset, "event": event}


def read_export(path: Path) -> list[Record]:
    """An export (``audit export`` without filters, for verification) as records in offset
    order per partition."""
    rows: list[Record] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            rows.append((row["partition"], row["offset"], orjson.dumps(row["event"])))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows
