"""Signed decisions on the real broker and Redis: a tool's Ed25519-signed decision applies;
an altered, replayed, expired, over-long, unknown-key or unsigned one is refused and audited
(no result filed for it); a domain whose policy accepts unsigned decisions takes them; the
review API's decisions are signed by the gateway; a decision sent to the wrong partition is
forwarded re-signed; the decisions topic is switched to the broker's timestamps."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hitl_gateway.admin import ensure_topics
from hitl_gateway.review.signatures import Nonces
from hitl_gateway.review.signing import Signed, Signer, new_key, tool_signer
from hitl_gateway.settings import DecisionSettings, RedisSettings, ReviewSettings

from .gateways import ApiStack, serving, write_reviewers
from .kafka_io import BOOTSTRAP, CONFIGS, delete_topics, fresh_settings, read_all, wait_until

GRANTS = {"ana": ["clinicians"], "fay": ["financial-analysts"]}


class Stack(ApiStack):
    tool: Signer
    stranger: Signer

    async def hold(self, item_id: str, domain: str = "clinical-summaries") -> dict[str, Any]:
        body = {"id": item_id, "domain": domain, "confidence": 0.9, "output": {"text": item_id}}
        await self.publish(self.settings.topics.outputs, orjson.dumps(body), item_id, [])
        return await self.item("ana" if domain == "clinical-summaries" else "fay", item_id)

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: str,
        hdrs: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, value, key=key.encode(), headers=hdrs, partition=partition
            )
        finally:
            await producer.stop()

    async def audit(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in await read_all(self.settings.topics.audit)]

    async def audited(self, decision_id: str, kind: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        async def seen() -> bool:
            found[:] = [
                e for e in await self.audit()
                if e.get("decision_id") == decision_id and e.get("type") == kind
            ]  # fmt: skip
            return bool(found)

        await wait_until(seen, timeout_s=30)
        assert len(found) == 1, found
        return found[0]


def decision(item_id: str, held: dict[str, Any], reviewer: str = "ana", **over: Any) -> bytes:
    body = {
        "decision_id": f"d-{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id,
        "reviewer": reviewer, "verdict": "approve", "content_hash": held["content_hash"],
    }  # fmt: skip
    return orjson.dumps({**body, **over})


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    finance = configs / "policies" / "financial-advice.yaml"
    finance.write_text(finance.read_text() + "unsigned_decisions: accept\n")
    tool_secret, tool_entry = new_key("label-tool", "ed25519")
    _, gateway_entry = new_key("gateway-1", "hmac-sha256")
    stranger_secret, _ = new_key("stranger", "ed25519")
    keys = tmp_path / "decision-keys.yaml"
    keys.write_text(tool_entry + gateway_entry)
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    settings = fresh_settings(policy_dir=configs / "policies").model_copy(
        update={
            "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
            "decisions": DecisionSettings(keys_file=keys, gateway_key_id="gateway-1"),
        }
    )
    async with serving(settings) as (gateway, http):
        s = Stack(settings, gateway, tokens, http)
        s.tool = tool_signer("label-tool", "ed25519", tool_secret)
        s.stranger = tool_signer("stranger", "ed25519", stranger_secret)
        yield s


async def test_signed_decisions_apply_and_every_bad_one_is_refused_and_audited(
    stack: Stack,
) -> None:
    s = stack
    topic = s.settings.topics.review_decisions
    held = {i: await s.hold(i) for i in ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8")}
    f1 = await s.hold("f1", "financial-advice")

    async def send(
        value: bytes, hdrs: list[tuple[str, bytes]], partition: int | None = None
    ) -> str:
        decision_id = str(orjson.loads(value)["decision_id"])
        item_id = str(orjson.loads(value)["item_id"])
        await s.publish(topic, value, item_id, hdrs, partition)
        return decision_id

    def signed(value: bytes, signer: Signer | None = None, **kw: Any) -> list[tuple[str, bytes]]:
        kw.setdefault("expires_ms", now_ms() + 60_000)
        return (signer or s.tool).headers(value, **kw)

    # A tool's signed approval applies; its audit event names the signer.
    ok = decision("c1", held["c1"])
    ok_id = await send(ok, signed(ok))
    assert (await s.audited(ok_id, "decided"))["signer"] == "label-tool"

    # Altered after signing: the signature no longer matches.
    original = decision("c2", held["c2"])
    altered = original.replace(b'"approve"', b'"reject"')
    altered_id = await send(altered, signed(original))
    refusal = await s.audited(altered_id, "decision_refused")
    assert (refusal["refusal"], refusal["signer"]) == ("bad_signature", "label-tool")
    assert "does not match" in refusal["message"]

    # Replayed: the same signed record published again is refused; it applied once.
    once = decision("c3", held["c3"], verdict="reject", reason="unsafe")
    once_headers = signed(once)
    once_id = await send(once, once_headers)
    await s.audited(once_id, "decided")
    await send(once, once_headers)
    replay = await s.audited(once_id, "decision_refused")
    assert replay["refusal"] == "bad_signature"
    assert "replayed" in replay["message"]

    # Expired, valid for too long, an untrusted key, unsigned: each refused by name.
    late = decision("c4", held["c4"])
    late_id = await send(late, signed(late, expires_ms=now_ms() - 5_000))
    assert "expired" in (await s.audited(late_id, "decision_refused"))["message"]
    eternal = decision("c5", held["c5"])
    eternal_id = await send(eternal, signed(eternal, expires_ms=now_ms() + 86_400_000))
    assert "longer than" in (await s.audited(eternal_id, "decision_refused"))["message"]
    foreign = decision("c6", held["c6"])
    foreign_id = await send(foreign, signed(foreign, signer=s.stranger))
    assert "not a trusted" in (await s.audited(foreign_id, "decision_refused"))["message"]
    bare = decision("c7", held["c7"])
    bare_id = await send(bare, [])
    bare_refusal = await s.audited(bare_id, "decision_refused")
    assert bare_refusal["refusal"] == "unsigned"
    assert "clinical-summaries" in bare_refusal["message"]

    # A refused decision files no result (a forgery must not answer for a genuine one).
    looked_up = await s.http.get(f"/v1/items/c2/decisions/{altered_id}", headers=s.auth("ana"))
    assert looked_up.status_code == 404

    # A domain whose policy accepts unsigned decisions takes them, audited as unsigned.
    finance = decision("f1", f1, reviewer="fay")
    finance_id = await send(finance, [])
    assert (await s.audited(finance_id, "decided"))["signer"] == "unsigned"

    # The review API's decisions are signed by the gateway itself.
    api = await s.http.post(
        "/v1/items/c8/decisions",
        json={"decision_id": "api-c8", "verdict": "approve",
              "content_hash": held["c8"]["content_hash"]},
        headers=s.auth("ana"),
    )  # fmt: skip
    assert (api.status_code, api.json()["state"]) == (200, "approved")
    assert (await s.audited("api-c8", "decided"))["signer"] == "gateway-1"

    # Sent to another partition than the hold's: forwarded, re-signed, the tool kept as origin.
    entry = await s.gateway.index.get("c4")
    assert entry is not None
    wrong = (entry.partition + 1) % s.settings.topics.partitions
    moved = decision("c4", held["c4"])
    moved_id = await send(moved, signed(moved), partition=wrong)
    assert (await s.audited(moved_id, "decided"))["signer"] == "label-tool"

    # What was released: the signed approvals, the unsigned-accepted finance item, the API's.
    delivered = sorted(r.key.decode() for r in await read_all(s.settings.topics.delivered))
    assert delivered == ["c1", "c4", "c8", "f1"]
    blocked = [r.key.decode() for r in await read_all(s.settings.topics.blocked)]
    assert blocked == ["c3"]
    still_held = {i for i in ("c2", "c5", "c6", "c7") if await s.gateway.index.get(i)}
    assert still_held == {"c2", "c5", "c6", "c7"}
    # Altered, replayed, expired, valid too long, untrusted key; and the one unsigned.
    assert s.metric("hitl_decisions_refused_total", reason="bad_signature") == 5
    assert s.metric("hitl_decisions_refused_total", reason="unsigned") == 1


async def test_a_nonce_is_one_use_except_for_its_own_record() -> None:
    """A batch applied again after a crash sees its own record's nonce: not a replay."""
    nonces = Nonces(RedisSettings(key_prefix=f"t{uuid.uuid4().hex[:8]}:"))
    try:
        signed = Signed("tool", now_ms() + 60_000, uuid.uuid4().hex, "")
        assert await nonces.first_use(signed, "0:5", 60_000) == "0:5"
        assert await nonces.first_use(signed, "0:5", 60_000) == "0:5"  # the same record again
        assert await nonces.first_use(signed, "2:9", 60_000) == "0:5"  # a copy elsewhere
    finally:
        await nonces.stop()


async def test_topics_switch_the_decisions_topic_to_the_broker_clock() -> None:
    settings = fresh_settings()
    topic = settings.topics.review_decisions
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topics.partitions, 1)])

        async def stamped() -> str | None:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic)
            (response,) = await admin.describe_configs([resource])
            entries = {e[0]: e[1] for e in response.resources[0][4]}
            return entries.get("message.timestamp.type")

        async def described() -> bool:  # a topic created moments ago may be unknown still
            return await stamped() is not None

        await wait_until(described, timeout_s=15)
        assert await stamped() == "CreateTime"
        changes = await ensure_topics(settings)
        assert changes.decisions_stamped_by_broker
        assert "LogAppendTime" in str(changes)

        async def switched() -> bool:
            return await stamped() == "LogAppendTime"

        await wait_until(switched, timeout_s=15)
        assert not (await ensure_topics(settings)).decisions_stamped_by_broker
    finally:
        await admin.close()
        await delete_topics(settings)
