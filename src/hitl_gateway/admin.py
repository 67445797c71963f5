"""Topic administration: create the gateway's topics explicitly, with their layout checked.

The audit topic keeps its events as long as the longest ``audit.retention_days`` of the
policies: set when it is created, raised (never lowered) when it already exists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from hitl_gateway.errors import ConfigError, InfrastructureError
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.settings import Settings

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000
RETENTION = "retention.ms"
TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = "LogAppendTime"
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config source: set on the topic itself


@dataclass(frozen=True, slots=True)
class TopicChanges:
    created: list[str] = field(default_factory=list)
    # The audit topic's retention in ms (before, after), when it was raised.
    audit_retention_raised: tuple[int, int] | None = None
    # The decisions topic was switched to the broker's timestamps (LogAppendTime).
    decisions_stamped_by_broker: bool = False

    def __str__(self) -> str:
        lines = [f"created: {', '.join(self.created) if self.created else 'nothing (all present)'}"]
        if self.audit_retention_raised is not None:
            before, after = self.audit_retention_raised
            lines.append(f"audit retention raised: {_days(before)} -> {_days(after)} days")
        if self.decisions_stamped_by_broker:
            lines.append(f"decisions topic: {TIMESTAMP_TYPE} set to {LOG_APPEND_TIME}")
        return "\n".join(lines)


def _days(ms: int) -> str:
    return f"{ms / DAY_MS:g}"


def audit_retention_ms(policies: PolicySet) -> int | None:
    """The longest audit retention any policy asks for (None: no policies)."""
    days = [loaded.policy.audit.retention_days for loaded in policies.policies.values()]
    return max(days) * DAY_MS if days else None


def topic_configs(
    settings: Settings, audit_retention: int | None = None
) -> dict[str, dict[str, str]]:
    """Per-topic configuration. Holds are a compacted record of open items (tombstoned)."""
    t = settings.topics
    max_bytes = str(settings.limits.max_wire_bytes)
    configs = {name: {"max.message.bytes": max_bytes} for name in t.all_names()}
    if t.min_insync_replicas is not None:
        for config in configs.values():
            config["min.insync.replicas"] = str(t.min_insync_replicas)
    configs[t.holds] = {**configs[t.holds], "cleanup.policy": "compact"}
    # Decisions carry the broker's clock: signatures expire by it (review/signatures.py).
    configs[t.review_decisions] = {**configs[t.review_decisions], TIMESTAMP_TYPE: LOG_APPEND_TIME}
    if audit_retention is not None:
        configs[t.audit] = {**configs[t.audit], RETENTION: str(audit_retention)}
    return configs


async def ensure_topics(settings: Settings, policies: PolicySet | None = None) -> TopicChanges:
    """Create missing topics; fail if an existing one has fewer partitions than configured;
    give the audit topic the retention the policies (by default, the settings' policy files)
    ask for. Returns what it changed."""
    if policies is None:
        p = settings.policy
        policies = load_policy_set(p.dir, p.pools_file, p.routing_file)
    retention = audit_retention_ms(policies)
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=settings.kafka.request_timeout_ms,
        **settings.kafka.admin_options(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = topic_configs(settings, retention)
        wanted = settings.topics.all_names()
        missing = [name for name in wanted if name not in existing]
        created, raced = await _create(admin, settings, missing, configs) if missing else ([], [])
        existing.update(raced)
        present = [name for name in wanted if name in existing]
        if present:
            for meta in await _describe(admin, present):
                count = len(meta["partitions"])
                if count < settings.topics.partitions:
                    raise ConfigError(
                        f"topic {meta['topic']} has {count} partitions, settings name "
                        f"{settings.topics.partitions}"
                    )
        raised = None
        if retention is not None and settings.topics.audit in existing:
            raised = await _keep_for_at_least(admin, settings.topics.audit, retention)
        decisions = settings.topics.review_decisions
        stamped = decisions in existing and await _stamp_by_broker(admin, decisions)
        return TopicChanges(created, raised, stamped)
    finally:
        await admin.close()


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> list[dict[str, Any]]:
    """Topic metadata; a topic created moments ago may be unknown to the broker for a
    moment longer, so retriable errors are asked again for up to 5 seconds."""
    retries = 20
    while True:
        found: list[dict[str, Any]] = await admin.describe_topics(names)
        failed = [m for m in found if m["error_code"]]
        if not failed:
            return found
        error = for_code(failed[0]["error_code"])
        if not error.retriable or not retries:
            raise InfrastructureError(
                f"describing topic {failed[0]['topic']} failed ({error.__name__})"
            )
        retries -= 1
        await asyncio.sleep(0.25)


async def _create(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    names: list[str],
    configs: dict[str, dict[str, str]],
) -> tuple[list[str], list[str]]:
    """Create these topics; returns those created and those that turned out to exist (a
    concurrent creator, or a topic so new that the metadata listing did not show it yet)."""
    new = [
        NewTopic(
            name,
            num_partitions=settings.topics.partitions,
            replication_factor=settings.topics.replication_factor,
            topic_configs=configs[name],
        )
        for name in names
    ]
    created: list[str] = []
    raced: list[str] = []
    response = await admin.create_topics(new)
    for name, code, *message in response.topic_errors:  # per topic; the call does not raise
        if code == 0:
            created.append(name)
        elif code == TopicAlreadyExistsError.errno:
            raced.append(name)
        else:
            error = for_code(code).__name__
            detail = f": {message[0]}" if message and message[0] else ""
            raise InfrastructureError(f"creating topic {name} failed ({error}){detail}")
    if created:
        log.info("topics_created", topics=created)
    return created, raced


async def _own_configs(
    admin: AIOKafkaAdminClient, topic: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(effective, set on the topic itself) configs of ``topic``."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    (response,) = await admin.describe_configs([resource])
    error, message, _, _, entries = response.resources[0][:5]
    if error:
        raise InfrastructureError(f"describing topic {topic}'s configs failed ({error}): {message}")
    effective: dict[str, Any] = {e[0]: e[1] for e in entries}
    own = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG and not e[4]}
    return effective, own


async def _alter(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, Any]) -> None:
    """Set ``topic``'s own configs to ``configs`` (AlterConfigs replaces them as a whole)."""
    wanted = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
    for altered in await admin.alter_configs([wanted]):
        for error, message, _, name in altered.resources:
            if error:
                raise InfrastructureError(
                    f"altering topic {name}'s configs ({', '.join(configs)}) failed ({error}):"
                    f" {message}"
                )


async def _stamp_by_broker(admin: AIOKafkaAdminClient, topic: str) -> bool:
    """Switch ``topic`` to the broker's timestamps if it takes the producer's; True if it did."""
    effective, own = await _own_configs(admin, topic)
    if effective.get(TIMESTAMP_TYPE) == LOG_APPEND_TIME:
        return False
    await _alter(admin, topic, {**own, TIMESTAMP_TYPE: LOG_APPEND_TIME})
    log.warning("decisions_stamped_by_broker", topic=topic, config=TIMESTAMP_TYPE)
    return True


async def _keep_for_at_least(
    admin: AIOKafkaAdminClient, topic: str, retention: int
) -> tuple[int, int] | None:
    """Raise ``topic``'s retention to ``retention`` ms if it is shorter (-1 is forever);
    returns (before, after) if it did. The broker applies it within moments, not at once.

    AlterConfigs replaces a topic's own settings as a whole, so the ones already set on the
    topic are sent along unchanged."""
    effective, own = await _own_configs(admin, topic)
    current = int(effective.get(RETENTION) or -1)
    if current < 0 or current >= retention:
        return None
    await _alter(admin, topic, {**own, RETENTION: str(retention)})
    log.warning("audit_retention_raised", topic=topic, from_ms=current, to_ms=retention,
                days=retention // DAY_MS)  # fmt: skip
    return current, retention
