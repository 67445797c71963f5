"""Who may do what on the secured local broker (``secure.py``): its users and their ACLs.

The gateway's user gets the least ``hitl-gateway run`` needs (docs/security.md has the
table and why each grant is there); each test user lacks one grant, so the tests can show
what a missing ACL does. Created through the admin API as the super user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack import StackError

SUPER_USER = "admin"
GATEWAY_USER = "hitl"
# Users for the tests: each lacks one of the gateway's grants (GATEWAY_USER has them all).
TEST_USERS = {
    "nobody": "no ACL at all",
    "hitl-no-group": "no READ on the consumer group",
    "hitl-no-txn": "no WRITE on the transactional ids",
    "hitl-no-write": "READ instead of WRITE on the delivered topic (a grant's wrong operation)",
}

# Kafka's ACL codes (org.apache.kafka.common.{resource,acl}): resource types, pattern types,
# operations and the ALLOW permission.
TOPIC, GROUP, TRANSACTIONAL_ID = 2, 3, 5
LITERAL, PREFIXED = 3, 4
READ, WRITE = 3, 4
ALLOW = 3
_KINDS = {TOPIC: "topic", GROUP: "group", TRANSACTIONAL_ID: "transactional-id"}
_OPERATIONS = {READ: "READ", WRITE: "WRITE"}


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ALLOW ``operation`` on a resource (from any host)."""

    resource_type: int
    name: str
    pattern: int
    operation: int

    def __str__(self) -> str:
        pattern = "prefixed" if self.pattern == PREFIXED else "literal"
        return f"{_OPERATIONS[self.operation]} {_KINDS[self.resource_type]} {self.name} ({pattern})"


def gateway_grants(settings: Any) -> list[Grant]:
    """What ``hitl-gateway run`` needs, and nothing else (the table in docs/security.md).
    DESCRIBE comes with READ and WRITE; no cluster permission is needed (Kafka 3.9 gives an
    idempotent producer its id for WRITE on any topic)."""
    t, k = settings.topics, settings.kafka
    read = [t.outputs, t.review_decisions, t.holds, t.audit]
    write = [t.delivered, t.deadletter, t.holds, t.review_tasks, t.review_decisions,
             t.blocked, t.training, t.audit, t.calibration]  # fmt: skip
    grants = [Grant(TOPIC, name, LITERAL, READ) for name in read]
    grants += [Grant(TOPIC, name, LITERAL, WRITE) for name in write]
    grants.append(Grant(GROUP, k.group_id, LITERAL, READ))
    grants.append(Grant(TRANSACTIONAL_ID, transactional_id_prefix(settings), PREFIXED, WRITE))
    return sorted(grants)


def transactional_id_prefix(settings: Any) -> str:
    """What every partition producer's id starts with (sink.transactional_id)."""
    from aiokafka import TopicPartition  # noqa: PLC0415 - needs the venv

    from hitl_gateway.sink import transactional_id  # noqa: PLC0415

    return transactional_id(settings.kafka, TopicPartition(settings.topics.outputs, 0))[:-1]


def user_grants(settings: Any) -> dict[str, list[Grant]]:
    """Each user's ACLs: the gateway's user has them all, each test user lacks one."""
    full = gateway_grants(settings)
    delivered = Grant(TOPIC, settings.topics.delivered, LITERAL, WRITE)
    return {
        GATEWAY_USER: full,
        "nobody": [],
        "hitl-no-group": [g for g in full if g.resource_type != GROUP],
        "hitl-no-txn": [g for g in full if g.resource_type != TRANSACTIONAL_ID],
        "hitl-no-write": [
            g if g != delivered else Grant(TOPIC, g.name, LITERAL, READ) for g in full
        ],
    }


async def create_acls(settings: Any) -> int:
    """Grant each user its ACLs (creating one that exists changes nothing); returns how many."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - needs the venv
    from aiokafka.errors import for_code  # noqa: PLC0415
    from aiokafka.protocol.admin import CreateAclsRequest  # noqa: PLC0415

    # aiokafka's admin client has no ACL call; its protocol module has the request.
    admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **settings.kafka.admin_options())
    await admin.start()
    count = 0
    try:
        for user, grants in user_grants(settings).items():
            for g in grants:
                request = CreateAclsRequest(
                    g.resource_type, g.name, g.pattern, f"User:{user}", "*", g.operation, ALLOW
                )
                response = await admin._send_request(request)
                for code, message in response.creation_responses:
                    if code:
                        raise StackError(f"granting {g} to {user} failed: "
                                         f"{for_code(code).__name__} {message}")  # fmt: skip
                count += 1
    finally:
        await admin.close()
    return count
