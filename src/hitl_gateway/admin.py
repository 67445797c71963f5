"""Topic administration: create the gateway's topics explicitly, with their layout checked."""

from __future__ import annotations

import contextlib

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import Settings

log = structlog.get_logger(__name__)


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration. Holds are a compacted record of open items (tombstoned)."""
    t = settings.topics
    max_bytes = str(settings.limits.max_record_bytes + 64 * 1024)
    configs = {name: {"max.message.bytes": max_bytes} for name in t.all_names()}
    configs[t.holds] = {**configs[t.holds], "cleanup.policy": "compact"}
    return configs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; fail if an existing one has fewer partitions than configured."""
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=settings.kafka.request_timeout_ms,
        **settings.kafka.client_options(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = topic_configs(settings)
        wanted = settings.topics.all_names()
        missing = [name for name in wanted if name not in existing]
        if missing:
            new = [
                NewTopic(
                    name,
                    num_partitions=settings.topics.partitions,
                    replication_factor=settings.topics.replication_factor,
                    topic_configs=configs[name],
                )
                for name in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(new)
            log.info("topics_created", topics=missing)
        present = [name for name in wanted if name in existing]
        if present:
            for meta in await admin.describe_topics(present):
                count = len(meta["partitions"])
                if count < settings.topics.partitions:
                    raise ConfigError(
                        f"topic {meta['topic']} has {count} partitions, settings name "
                        f"{settings.topics.partitions}"
                    )
        return missing
    finally:
        await admin.close()
