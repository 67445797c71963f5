"""The secured local broker's ACLs (deploy/local/acls.py): what the gateway's user is
granted matches what the gateway uses, and each test user lacks exactly one grant."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from aiokafka import TopicPartition

from hitl_gateway.settings import KafkaSettings, Settings, TopicSettings
from hitl_gateway.sink import transactional_id

_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local"
sys.path.insert(0, str(_DIR))  # acls.py imports stack.py beside it
_spec = importlib.util.spec_from_file_location("acls", _DIR / "acls.py")
assert _spec is not None
assert _spec.loader is not None
secure = importlib.util.module_from_spec(_spec)
sys.modules["acls"] = secure
_spec.loader.exec_module(secure)

SETTINGS = Settings(
    kafka=KafkaSettings(group_id="grp", transactional_id_prefix="txp"),
    topics=TopicSettings(outputs="in", review_decisions="dec"),
)


def _by(resource_type: int, operation: int) -> set[str]:
    return {
        g.name
        for g in secure.gateway_grants(SETTINGS)
        if g.resource_type == resource_type and g.operation == operation
    }


def test_the_gateway_reads_its_inputs_and_what_it_rebuilds_state_from() -> None:
    t = SETTINGS.topics
    assert _by(secure.TOPIC, secure.READ) == {"in", "dec", t.holds, t.audit}


def test_the_gateway_writes_every_output_and_nothing_it_only_reads() -> None:
    t = SETTINGS.topics
    written = _by(secure.TOPIC, secure.WRITE)
    assert written == set(t.all_names()) - {"in"}  # decisions: the review API publishes them
    assert _by(secure.GROUP, secure.READ) == {"grp"}


def test_the_transactional_id_prefix_covers_every_partition_and_no_other_group() -> None:
    (grant,) = [
        g for g in secure.gateway_grants(SETTINGS) if g.resource_type == secure.TRANSACTIONAL_ID
    ]
    assert grant.pattern == secure.PREFIXED
    assert grant.operation == secure.WRITE
    for p in (0, 7, 123):
        assert transactional_id(SETTINGS.kafka, TopicPartition("in", p)).startswith(grant.name)
    other = SETTINGS.kafka.model_copy(update={"group_id": "grp2"})
    assert not transactional_id(other, TopicPartition("in", 0)).startswith(grant.name)


def test_no_cluster_permission_and_nothing_beyond_read_and_write() -> None:
    grants = secure.gateway_grants(SETTINGS)
    assert {g.resource_type for g in grants} == {
        secure.TOPIC,
        secure.GROUP,
        secure.TRANSACTIONAL_ID,
    }
    assert {g.operation for g in grants} == {secure.READ, secure.WRITE}


def test_each_test_user_lacks_exactly_one_grant() -> None:
    users = secure.user_grants(SETTINGS)
    full = set(users[secure.GATEWAY_USER])
    assert set(users) == {secure.GATEWAY_USER, *secure.TEST_USERS}
    assert users["nobody"] == []
    for user in ("hitl-no-group", "hitl-no-txn", "hitl-no-write"):
        assert len(full - set(users[user])) == 1, user
