"""The hold life cycle through the real review API, broker and Redis: approve, edit, reject,
consensus and adjudication, every refusal, decisions over the topic, an index rebuilt after
FLUSHALL, and a tamper-evident audit trail."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from hitl_gateway.admin import ensure_topics
from hitl_gateway.audit_verify import verify
from hitl_gateway.settings import ReviewSettings, Settings

from .gateways import ApiStack, serving, start_gateway, write_reviewers
from .kafka_io import (
    CONFIGS,
    REDIS_URL,
    delete_topics,
    fresh_settings,
    produce,
    read_all,
    settings_env,
    wait_until,
)

GRANTS = {
    "ana": ["clinicians", "senior-clinicians"],
    "svc-bot": ["clinicians"],
    "eve": ["general-graders"],
    "leo": ["lawyers"],
    "lia": ["lawyers"],
    "sam": ["senior-counsel"],
    "una": ["general-graders"],
}
DOMAINS = {"una": ["translations"]}  # una reviews translations only, in a shared pool


class Stack(ApiStack):
    async def hold(
        self, item_id: str, domain: str, viewer: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"id": item_id, "domain": domain, "confidence": 0.9, "output": {"text": item_id}}
        await produce(
            self.settings.topics.outputs, [(item_id.encode(), orjson.dumps({**body, **fields}))]
        )
        viewer = viewer or ("ana" if domain == "clinical-summaries" else "leo")
        return await self.item(viewer, item_id)

    async def decide(self, who: str, item_id: str, **body: Any) -> httpx.Response:
        body.setdefault("decision_id", uuid.uuid4().hex)
        return await self.http.post(
            f"/v1/items/{item_id}/decisions", json=body, headers=self.auth(who)
        )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS, DOMAINS)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={"review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml")}
    )
    async with serving(settings) as (gateway, http):
        yield Stack(settings, gateway, tokens, http)


async def test_a_reviewer_granted_some_domains_pages_among_them_only(stack: Stack) -> None:
    s = stack
    # The shared pool general-graders: low-confidence support answers (15 minute SLA) come
    # before translations (two days) in deadline order.
    for n in range(3):
        await s.hold(f"s{n}", "support-chat", viewer="eve", confidence=0.2)
    for n in range(3):
        await s.hold(f"t{n}", "translations", viewer="eve", confidence=0.5)

    async def page(who: str, query: str) -> tuple[int, list[str]]:
        url = f"/v1/pools/general-graders/items?{query}"
        found = (await s.http.get(url, headers=s.auth(who))).json()
        return found["total"], [i["item_id"] for i in found["items"]]

    assert await page("eve", "limit=2") == (6, ["s0", "s1"])
    assert await page("una", "limit=2") == (3, ["t0", "t1"])
    assert await page("una", "limit=2&offset=2") == (3, ["t2"])
    assert await page("una", "order=age&limit=5") == (3, ["t0", "t1", "t2"])
    hidden = await s.http.get("/v1/items/s0", headers=s.auth("una"))
    assert hidden.status_code == 403


async def test_approve_edit_reject_and_every_refusal(stack: Stack) -> None:
    s = stack
    c1 = await s.hold("c1", "clinical-summaries")
    c2 = await s.hold("c2", "clinical-summaries")
    c3 = await s.hold("c3", "clinical-summaries", metadata={"service": "svc-bot"})
    page = (await s.http.get("/v1/pools/clinicians/items", headers=s.auth("ana"))).json()
    assert [i["item_id"] for i in page["items"]] == ["c1", "c2", "c3"]  # nearest deadline first
    assert (await s.http.get("/v1/pools/clinicians/items")).status_code == 401
    assert (
        await s.http.get("/v1/pools/clinicians/items", headers=s.auth("eve"))
    ).status_code == 403

    h1 = c1["content_hash"]
    refused = await s.decide("eve", "c1", verdict="approve", content_hash=h1)
    assert (refused.status_code, refused.json()["refusal"]) == (403, "not_allowed")
    stale = await s.decide("ana", "c1", verdict="approve", content_hash="sha256:" + "0" * 64)
    assert (stale.status_code, stale.json()["refusal"]) == (409, "stale_content")
    approved = await s.decide("ana", "c1", verdict="approve", content_hash=h1, decision_id="d-c1")
    assert (approved.status_code, approved.json()["state"]) == (200, "approved")
    again = await s.decide("ana", "c1", verdict="approve", content_hash=h1, decision_id="d-c1")
    assert again.status_code == 200  # idempotent by decision id
    closed = await s.decide("ana", "c1", verdict="approve", content_hash=h1)
    assert (closed.status_code, closed.json()["refusal"]) == (409, "already_closed")
    assert (await s.http.get("/v1/items/c1", headers=s.auth("ana"))).status_code == 404

    edited = await s.decide(
        "ana",
        "c2",
        verdict="edit",
        content_hash=c2["content_hash"],
        edited_output={"text": "fixed"},
        grades={"accuracy": 3},
        notes="dosage corrected",
    )
    assert (edited.status_code, edited.json()["state"]) == (200, "edited")

    self_review = await s.decide(
        "svc-bot", "c3", verdict="approve", content_hash=c3["content_hash"]
    )
    assert (self_review.status_code, self_review.json()["refusal"]) == (403, "self_approval")
    rejected = await s.decide(
        "ana", "c3", verdict="reject", content_hash=c3["content_hash"], reason="unsafe advice"
    )
    assert (rejected.status_code, rejected.json()["state"]) == (200, "rejected")

    unknown = await s.decide("ana", "nope", verdict="approve", content_hash=h1)
    assert (unknown.status_code, unknown.json()["refusal"]) == (404, "unknown_item")
    malformed = await s.decide("ana", "c2", verdict="edit", content_hash=h1)  # edit without output
    assert malformed.status_code == 422

    t = s.settings.topics
    delivered = {r.key: r for r in await read_all(t.delivered)}
    assert set(delivered) == {b"c1", b"c2"}
    assert orjson.loads(delivered[b"c1"].value)["output"] == {"text": "c1"}
    assert dict(delivered[b"c1"].headers)["hitl.route"] == b"approved"
    assert orjson.loads(delivered[b"c2"].value)["output"] == {"text": "fixed"}
    (blocked,) = await read_all(t.blocked)
    assert (blocked.key, dict(blocked.headers)["hitl.reject.reason"]) == (b"c3", b"unsafe advice")
    training = {
        orjson.loads(r.value)["item_id"]: orjson.loads(r.value) for r in await read_all(t.training)
    }
    assert training["c2"]["edited_output"] == {"text": "fixed"}
    assert training["c2"]["original_output"] == {"text": "c2"}
    assert training["c2"]["grades"] == {"accuracy": 3}
    holds = await read_all(t.holds)
    assert sorted(r.key for r in holds if r.value is None) == [b"c1", b"c2", b"c3"]  # tombstones

    trail = [(r.partition, r.offset, r.value) for r in await read_all(t.audit)]
    result = verify(sorted(trail))
    assert result.first_break is None
    kinds = [orjson.loads(v)["type"] for _, _, v in trail]
    assert kinds.count("decided") == 3
    refusals = {orjson.loads(v).get("refusal") for _, _, v in trail} - {None}
    assert refusals == {
        "not_allowed",
        "stale_content",
        "already_closed",
        "self_approval",
        "unknown_item",
    }


async def test_consensus_and_adjudication(stack: Stack) -> None:
    s = stack
    l1 = await s.hold("l1", "legal-drafts")
    first = await s.decide("leo", "l1", verdict="approve", content_hash=l1["content_hash"])
    assert (first.status_code, first.json()["state"]) == (202, "pending")
    twice = await s.decide("leo", "l1", verdict="approve", content_hash=l1["content_hash"])
    assert (twice.status_code, twice.json()["refusal"]) == (409, "already_voted")
    second = await s.decide("lia", "l1", verdict="approve", content_hash=l1["content_hash"])
    assert (second.status_code, second.json()["state"]) == (200, "approved")

    l2 = await s.hold("l2", "legal-drafts")
    await s.decide("leo", "l2", verdict="approve", content_hash=l2["content_hash"])
    split = await s.decide("lia", "l2", verdict="reject", content_hash=l2["content_hash"])
    assert split.status_code == 202
    assert "senior-counsel" in split.json()["message"]
    view = (await s.http.get("/v1/items/l2", headers=s.auth("sam"))).json()
    assert (view["pool"], view["stage"], view["votes"]) == ("senior-counsel", "adjudication", 2)
    late = await s.decide("leo", "l2", verdict="approve", content_hash=l2["content_hash"])
    assert late.status_code == 403  # the review round is over: only the adjudicator decides
    final = await s.decide("sam", "l2", verdict="approve", content_hash=l2["content_hash"])
    assert (final.status_code, final.json()["state"]) == (200, "approved")
    assert sorted(r.key for r in await read_all(s.settings.topics.delivered)) == [b"l1", b"l2"]
    tasks = [orjson.loads(r.value) for r in await read_all(s.settings.topics.review_tasks)]
    assert any(t["pool"] == "senior-counsel" and t["rule"] == "adjudication" for t in tasks)


async def test_decision_over_the_topic_takes_the_same_path(stack: Stack) -> None:
    s = stack
    c = await s.hold("t1", "clinical-summaries")
    decision = {
        "decision_id": "topic-1", "item_id": "t1", "reviewer": "ana", "verdict": "approve",
        "content_hash": c["content_hash"],
    }  # fmt: skip
    await produce(s.settings.topics.review_decisions, [(b"t1", orjson.dumps(decision))])
    await produce(s.settings.topics.review_decisions, [(b"x", b"{not json")])

    async def applied() -> bool:
        status = await s.http.get("/v1/items/t1/decisions/topic-1", headers=s.auth("ana"))
        return status.status_code == 200 and status.json()["state"] == "approved"

    await wait_until(applied, timeout_s=30)
    assert [r.key for r in await read_all(s.settings.topics.delivered)] == [b"t1"]

    async def malformed_audited() -> bool:
        trail = [orjson.loads(r.value) for r in await read_all(s.settings.topics.audit)]
        return any(e.get("refusal") == "malformed" for e in trail)

    await wait_until(malformed_audited, timeout_s=30)


async def test_index_is_rebuilt_after_redis_loses_everything(tmp_path: Path) -> None:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={"review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml")}
    )
    await ensure_topics(settings)
    try:
        gateway, task = await start_gateway(settings)
        base = f"http://127.0.0.1:{gateway.http.port if gateway.http else 0}"
        headers = {"Authorization": f"Bearer {tokens['ana']}"}
        body = {"id": "r1", "domain": "clinical-summaries", "output": {"text": "keep me"}}
        await produce(settings.topics.outputs, [(b"r1", orjson.dumps(body))])
        async with httpx.AsyncClient(base_url=base) as http:

            async def held() -> bool:
                return (await http.get("/v1/items/r1", headers=headers)).status_code == 200

            await wait_until(held, timeout_s=30)
        gateway.request_stop()
        await asyncio.wait_for(task, 30)

        client = aioredis.Redis.from_url(REDIS_URL)
        await client.flushall()
        await client.aclose()

        gateway, task = await start_gateway(settings)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.http.port if gateway.http else 0}"
        ) as http:

            async def rebuilt() -> bool:
                return (await http.get("/v1/items/r1", headers=headers)).status_code == 200

            await wait_until(rebuilt, timeout_s=30)
            item = (await http.get("/v1/items/r1", headers=headers)).json()
            assert item["record"]["output"] == {"text": "keep me"}
            decision = {"decision_id": "after-flush", "verdict": "approve"}
            decision["content_hash"] = item["content_hash"]
            ok = await http.post("/v1/items/r1/decisions", headers=headers, json=decision)
            assert ok.status_code == 200
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        assert [r.key for r in await read_all(settings.topics.delivered)] == [b"r1"]
    finally:
        await delete_topics(settings)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "hitl_gateway.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_audit_export_and_verify_detect_tampering(stack: Stack, tmp_path: Path) -> None:
    s = stack
    c = await s.hold("a1", "clinical-summaries")
    await s.decide("ana", "a1", verdict="approve", content_hash=c["content_hash"])
    export = tmp_path / "trail.jsonl"
    exported = await asyncio.to_thread(_cli, s.settings, "audit", "export", "--out", str(export))
    assert exported.returncode == 0, exported.stderr
    live = await asyncio.to_thread(_cli, s.settings, "audit", "verify")
    assert (live.returncode, live.stdout.startswith("ok:")) == (0, True), live.stdout
    assert _cli(s.settings, "audit", "verify", "--file", str(export)).returncode == 0
    lines = export.read_bytes().splitlines()
    assert len(lines) >= 2
    row = orjson.loads(lines[0])
    row["event"]["route"] = "pass"  # someone rewrites history
    export.write_bytes(b"\n".join([orjson.dumps(row), *lines[1:]]) + b"\n")
    tampered = _cli(s.settings, "audit", "verify", "--file", str(export))
    assert tampered.returncode == 1
    assert (
        f"partition {row['partition']} offset {row['offset']}: hash_mismatch: hash does not match"
        in tampered.stdout
    )
    one = tmp_path / "one.jsonl"
    args = ("audit", "export", "--out", str(one), "--item", "a1")
    assert (await asyncio.to_thread(_cli, s.settings, *args)).returncode == 0
    assert all(orjson.loads(x)["event"]["item_id"] == "a1" for x in one.read_bytes().splitlines())


async def _fast_sla_stack(tmp_path: Path, policy_files: dict[str, str]) -> Settings:
    """Shipped pools, these policy files, the test reviewers and a 0.2 s SLA sweep."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (tmp_path / "pools.yaml").write_text((CONFIGS / "pools.yaml").read_text())
    (tmp_path / "routing.yaml").write_text((CONFIGS / "routing.yaml").read_text())
    for name, text in policy_files.items():
        (policies / name).write_text(text)
    review = ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml", sla_check_interval_s=0.2)
    settings = fresh_settings(policy_dir=policies).model_copy(update={"review": review})
    await ensure_topics(settings)
    return settings


async def test_sla_breach_escalates_and_never_releases(tmp_path: Path) -> None:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    urgent = (
        "domain: urgent\n"
        "mandatory_review:\n"
        "  pool: clinicians\n"
        "  sla: 1s\n"
        "  escalation: [{after: 1s, pool: senior-clinicians}]\n"
    )
    settings = await _fast_sla_stack(tmp_path, {"urgent.yaml": urgent})
    gateway, task = await start_gateway(settings)
    try:
        body = {"id": "u1", "domain": "urgent", "output": {"text": "now"}}
        await produce(settings.topics.outputs, [(b"u1", orjson.dumps(body))])
        base = f"http://127.0.0.1:{gateway.http.port if gateway.http else 0}"
        headers = {"Authorization": f"Bearer {tokens['ana']}"}
        async with httpx.AsyncClient(base_url=base) as http:

            async def escalated() -> bool:
                item = await http.get("/v1/items/u1", headers=headers)
                return item.status_code == 200 and item.json()["pool"] == "senior-clinicians"

            await wait_until(escalated, timeout_s=30, interval_s=0.2)
        trail = [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]
        kinds = [e["type"] for e in trail if e.get("item_id") == "u1"]
        assert kinds.count("sla_breached") == 1
        assert kinds.count("escalated") == 1
        tasks = [orjson.loads(r.value) for r in await read_all(settings.topics.review_tasks)]
        assert [t["pool"] for t in tasks] == ["clinicians", "senior-clinicians"]
        assert await read_all(settings.topics.delivered) == []  # fail-closed
        registry = gateway.metrics.registry
        assert (
            registry.get_sample_value("hitl_escalations_total", {"pool": "senior-clinicians"}) == 1
        )
        assert (
            verify(
                sorted(
                    (r.partition, r.offset, r.value) for r in await read_all(settings.topics.audit)
                )
            ).first_break
            is None
        )
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)


async def test_deliver_and_review_items_are_reviewed_without_blocking(tmp_path: Path) -> None:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    (tmp_path / "reviewers.yaml").write_text(
        (tmp_path / "reviewers.yaml")
        .read_text()
        .replace("pools: [general-graders]", "pools: [native-de]")
    )
    text = (CONFIGS / "policies" / "translations.yaml").read_text().replace("sla: 2d", "sla: 1s")
    settings = await _fast_sla_stack(tmp_path, {"translations.yaml": text})
    gateway, task = await start_gateway(settings)
    try:
        body = {
            "id": "tr1",
            "domain": "translations",
            "confidence": 0.1,
            "language": "de",
            "output": {"text": "Hallo"},
        }
        await produce(settings.topics.outputs, [(b"tr1", orjson.dumps(body))])
        headers = {"Authorization": f"Bearer {tokens['eve']}"}  # eve now reviews native-de
        base = f"http://127.0.0.1:{gateway.http.port if gateway.http else 0}"
        async with httpx.AsyncClient(base_url=base) as http:

            async def breached() -> bool:
                trail = [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]
                return any(e["type"] == "sla_breached" for e in trail)

            await wait_until(breached, timeout_s=30, interval_s=0.2)
            item = (await http.get("/v1/items/tr1", headers=headers)).json()
            assert (item["blocking"], item["pool"]) == (False, "native-de")
            grade = {"decision_id": "g1", "verdict": "approve", "grades": {"fluency": 5}}
            grade["content_hash"] = item["content_hash"]
            graded = await http.post("/v1/items/tr1/decisions", headers=headers, json=grade)
            assert (graded.status_code, graded.json()["state"]) == (200, "approved")
        delivered = await read_all(settings.topics.delivered)
        assert [r.key for r in delivered] == [b"tr1"]  # delivered once, at routing time
        assert dict(delivered[0].headers)["hitl.route"] == b"deliver_and_review"
        (label,) = [orjson.loads(r.value) for r in await read_all(settings.topics.training)]
        assert (label["item_id"], label["grades"]) == ("tr1", {"fluency": 5})
        trail = [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]
        assert not any(e["type"] == "escalated" for e in trail)  # reported, not escalated
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)
