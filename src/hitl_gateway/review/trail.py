"""Reading the audit trail back: export (all, one item, one period) and verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitl_gateway.audit import Verification, verify
from hitl_gateway.recovery import Reader
from hitl_gateway.settings import Settings


async def read_trail(settings: Settings) -> list[tuple[int, int, bytes | None]]:
    """Every committed audit event as (partition, offset, value), in order per partition."""
    admin = AIOKafkaAdminClient(**settings.kafka.admin_options())
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([settings.topics.audit])
    finally:
        await admin.close()
    reader = Reader(settings.kafka)
    await reader.start()
    out: list[tuple[int, int, bytes | None]] = []
    try:
        for p in sorted(part["partition"] for part in meta["partitions"]):
            records, _ = await reader.read(TopicPartition(settings.topics.audit, p), None, 600)
            out += [(p, r.offset, r.value) for r in records]
    finally:
        await reader.stop()
    return out


def select(
    trail: list[tuple[int, int, bytes | None]],
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


def verify_file(path: Path) -> Verification:
    """Verify an export of whole partitions (``audit export`` without filters)."""
    rows = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            rows.append((row["partition"], row["offset"], orjson.dumps(row["event"])))
    rows.sort(key=lambda r: (r[0], r[1]))
    return verify(rows)
