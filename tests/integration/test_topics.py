"""Topic administration against the real broker: the audit topic keeps its events as long
as the longest policy asks, set at creation and raised (never lowered) afterwards."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hitl_gateway.admin import DAY_MS, ensure_topics
from hitl_gateway.errors import ConfigError, InfrastructureError
from hitl_gateway.settings import Settings

from .kafka_io import BOOTSTRAP, CONFIGS, delete_topics, fresh_settings, wait_until


def _policies(tmp_path: Path, days: dict[str, int]) -> Path:
    """A copy of the shipped policies with these domains' ``audit.retention_days``."""
    shutil.copytree(CONFIGS, tmp_path / "configs")
    policies = tmp_path / "configs" / "policies"
    for domain, value in days.items():
        path = policies / f"{domain}.yaml"
        lines = path.read_text().splitlines()
        at = next(n for n, line in enumerate(lines) if line.strip().startswith("retention_days:"))
        lines[at] = f"  retention_days: {value}"
        path.write_text("\n".join(lines) + "\n")
    return policies


async def _configs(topic: str) -> dict[str, tuple[str, int]]:
    """The topic's effective configs: value and source (1: set on the topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    return {e[0]: (e[1], e[3]) for e in response.resources[0][4]}


async def _create(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, settings.topics.partitions, 1, topic_configs=configs)]
        )

        async def listed() -> bool:  # the broker's metadata follows the controller
            return topic in await admin.list_topics()

        await wait_until(listed, timeout_s=15)
    finally:
        await admin.close()


# Every shipped policy that sets retention_days, all shortened so one of them is longest.
_SHORT = {
    "clinical-summaries": 30,
    "financial-advice": 30,
    "support-chat": 20,
    "legal-drafts": 400,
}


async def test_a_new_audit_topic_keeps_events_as_long_as_the_longest_policy(
    tmp_path: Path,
) -> None:
    # Policies that leave retention_days out take its default (2,555 days), so only the
    # files that set it are kept here: the others are removed from the copy.
    policies = _policies(tmp_path, _SHORT)
    for path in policies.glob("*.yaml"):
        if path.stem not in _SHORT:
            path.unlink()
    settings = fresh_settings(policy_dir=policies)
    try:
        changes = await ensure_topics(settings)
        assert settings.topics.audit in changes.created
        assert changes.audit_retention_raised is None
        audit = await _configs(settings.topics.audit)
        assert audit["retention.ms"] == (str(400 * DAY_MS), 1)
        outputs = await _configs(settings.topics.outputs)
        assert outputs["retention.ms"][1] != 1  # only the audit topic is given one
    finally:
        await delete_topics(settings)


async def test_an_existing_short_audit_retention_is_raised_and_its_other_settings_kept(
    tmp_path: Path,
) -> None:
    settings = fresh_settings(policy_dir=_policies(tmp_path, {"legal-drafts": 4_000}))
    await _create(
        settings,
        settings.topics.audit,
        {"retention.ms": str(DAY_MS), "segment.ms": "3600000", "max.message.bytes": "2000000"},
    )
    try:
        changes = await ensure_topics(settings)
        assert settings.topics.audit not in changes.created
        assert changes.audit_retention_raised == (DAY_MS, 4_000 * DAY_MS)
        assert "audit retention raised: 1 -> 4000 days" in str(changes)

        async def raised() -> bool:  # the broker applies a config change within moments
            found = await _configs(settings.topics.audit)
            return found["retention.ms"] == (str(4_000 * DAY_MS), 1)

        await wait_until(raised, timeout_s=15)
        audit = await _configs(settings.topics.audit)
        assert audit["segment.ms"] == ("3600000", 1)
        assert audit["max.message.bytes"] == ("2000000", 1)
    finally:
        await delete_topics(settings)


@pytest.mark.parametrize("kept", ["-1", str(5_000 * DAY_MS)])
async def test_a_longer_audit_retention_is_never_lowered(tmp_path: Path, kept: str) -> None:
    settings = fresh_settings(policy_dir=_policies(tmp_path, {}))
    await _create(settings, settings.topics.audit, {"retention.ms": kept})
    try:
        assert (await ensure_topics(settings)).audit_retention_raised is None
        assert (await _configs(settings.topics.audit))["retention.ms"] == (kept, 1)
    finally:
        await delete_topics(settings)


async def test_invalid_policies_stop_topic_creation_with_the_problem_named(
    tmp_path: Path,
) -> None:
    policies = _policies(tmp_path, {"legal-drafts": 0})  # retention_days must be >= 1
    settings = fresh_settings(policy_dir=policies)
    with pytest.raises(ConfigError, match="retention_days"):
        await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        assert settings.topics.audit not in await admin.list_topics()
    finally:
        await admin.close()


async def test_concurrent_creators_each_report_only_what_they_created(tmp_path: Path) -> None:
    settings = fresh_settings(policy_dir=_policies(tmp_path, {}))
    try:
        first, second = await asyncio.gather(ensure_topics(settings), ensure_topics(settings))
        assert sorted(first.created + second.created) == sorted(settings.topics.all_names())
        assert (await _configs(settings.topics.audit))["retention.ms"][1] == 1
    finally:
        await delete_topics(settings)


async def test_a_topic_the_broker_refuses_is_an_error_naming_it(tmp_path: Path) -> None:
    settings = fresh_settings(policy_dir=_policies(tmp_path, {}))
    topics = settings.topics.model_copy(update={"replication_factor": 3})  # one broker here
    with pytest.raises(InfrastructureError, match=r"creating topic t\w+\.\w+ failed \(Invalid"):
        await ensure_topics(settings.model_copy(update={"topics": topics}))
