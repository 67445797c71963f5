"""Test helpers that talk to the real local broker: fresh topics, produce, read everything."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitl_gateway.settings import (
    HttpSettings,
    KafkaSettings,
    PolicySettings,
    RedisSettings,
    RuntimeSettings,
    Settings,
    TopicSettings,
)

BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fresh_settings(
    partitions: int = 3, policy_dir: Path = FIXTURES / "passthrough" / "policies", **kafka: Any
) -> Settings:
    """Settings with topics, group and transactional ids no other test shares."""
    uid = uuid.uuid4().hex[:10]
    names = {
        field: f"t{uid}.{field}"
        for field in TopicSettings.model_fields
        if field not in ("partitions", "replication_factor", "min_insync_replicas")
    }
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=BOOTSTRAP,
            group_id=f"g{uid}",
            transactional_id_prefix=f"tx{uid}",
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
            request_timeout_ms=15_000,
            poll_timeout_ms=100,
            **kafka,
        ),
        topics=TopicSettings(partitions=partitions, **names),
        policy=PolicySettings(dir=policy_dir, reload_interval_s=0.2),
        redis=RedisSettings(url=REDIS_URL, key_prefix=f"t{uid}:"),
        http=HttpSettings(port=0),
        runtime=RuntimeSettings(log_format="json", shutdown_timeout_s=20),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The HITL_* environment that reproduces ``settings`` in a gateway subprocess."""
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            if isinstance(value, dict):
                for option, setting in value.items():  # HITL_KAFKA__CLIENT__<option>
                    env[f"HITL_{section}__{name}__{option}".upper()] = str(setting)
            elif isinstance(value, list):  # a tuple setting: the environment takes JSON
                env[f"HITL_{section}__{name}".upper()] = json.dumps(value)
            elif value is not None:
                env[f"HITL_{section}__{name}".upper()] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
    return env


async def delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics(settings.topics.all_names())
    finally:
        await admin.close()


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


async def produce(
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
    *,
    bootstrap: str = BOOTSTRAP,
    security: dict[str, Any] | None = None,
) -> list[Sent]:
    """Produce in order (idempotent, acks=all) and return where each record landed.
    ``security``: aiokafka's security options, for a secured broker."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=4_000_000,
        **(security or {}),
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers or [])
            for key, value in records
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Sent(key, value, meta.partition, meta.offset)
        for (key, value), meta in zip(records, metas, strict=True)
    ]


async def read_all(
    topic: str,
    timeout_s: float = 30.0,
    *,
    bootstrap: str = BOOTSTRAP,
    security: dict[str, Any] | None = None,
) -> list[Any]:
    """Every committed record of ``topic`` (read_committed up to the last stable offset)."""
    security = security or {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        **security,
    )
    await consumer.start()
    try:
        partitions = await _partitions(topic, bootstrap, security)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await _stable_end(consumer, tps, bootstrap=bootstrap, security=security)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while await _behind(consumer, end):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def _stable_end(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    settle_s: float = 10.0,
    *,
    bootstrap: str = BOOTSTRAP,
    security: dict[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """The last stable offsets, once the transactions already committed have their markers
    written. A commit returns before the broker has written the markers to the partitions,
    and until then a read_committed reader stops below the transaction: wait (up to
    ``settle_s``) for the stable offsets to reach the high watermarks. A transaction still
    open after that is left out, as any read_committed reader would."""
    latest = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(security or {})
    )
    await latest.start()
    try:
        high = await latest.end_offsets(tps)
    finally:
        await latest.stop()
    deadline = time.monotonic() + settle_s
    while True:
        stable = await consumer.end_offsets(tps)
        if all(stable[tp] >= high[tp] for tp in tps) or time.monotonic() > deadline:
            return stable
        await asyncio.sleep(0.05)


async def _behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return True
    return False


async def _partitions(
    topic: str, bootstrap: str = BOOTSTRAP, security: dict[str, Any] | None = None
) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in meta["partitions"])


async def end_offset_total(topic: str, isolation_level: str = "read_uncommitted") -> int:
    """The sum of ``topic``'s end offsets: its records plus any transaction markers (the
    high watermarks), or with ``read_committed`` the last stable offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level=isolation_level)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(topic)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """The gateway group's committed offset per partition of ``topic`` (default: the input)."""
    topic = topic or settings.topics.outputs
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.kafka.group_id)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> None:
    """Poll an async predicate until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
