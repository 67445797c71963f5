"""Every held item has a way out, against the real broker and Redis: a language no pool speaks
reaches the fallback pool and is decided there; a cascade hold escalates along its (inherited)
chain, with exactly one webhook notification per alerting step; a pool added by a reload
picks up the holds that waited for it; an operator moves work, refused where the target pool
cannot serve it, and a bulk reassignment is applied once despite a kill in the middle."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from hitl_gateway.admin import ensure_topics
from hitl_gateway.audit_verify import verify
from hitl_gateway.holds import HoldIndex
from hitl_gateway.review.reassign import progress
from hitl_gateway.settings import NotifySettings, ReviewSettings, Settings

from .gateways import start_gateway, write_reviewers
from .kafka_io import (
    CONFIGS,
    delete_topics,
    fresh_settings,
    produce,
    read_all,
    settings_env,
    wait_until,
)
from .processes import GatewayProcess
from .webhook import Receiver

GRANTS = {
    "lu": ["language-desk"],
    "eve": ["general-graders"],
    "lee": ["review-leads"],
    "pia": ["native-pt"],
    "op": ['"*"'],
}


async def _configs(
    tmp_path: Path, policies: dict[str, str], routing: str | None = None, **review: Any
) -> tuple[Settings, dict[str, str]]:
    """Shipped pools (and routing, unless given), these policies, the test reviewers, a fast
    SLA sweep; topics created."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "pools.yaml").write_text((CONFIGS / "pools.yaml").read_text())
    (tmp_path / "routing.yaml").write_text(routing or (CONFIGS / "routing.yaml").read_text())
    for name, text in policies.items():
        (tmp_path / "policies" / name).write_text(text)
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS, operators=["op"])
    settings = fresh_settings(policy_dir=tmp_path / "policies")
    settings = settings.model_copy(
        update={
            "review": ReviewSettings(
                reviewers_file=tmp_path / "reviewers.yaml", sla_check_interval_s=0.2, **review
            )
        }
    )
    await ensure_topics(settings)
    return settings, tokens


def _record(item_id: str, domain: str, **fields: Any) -> tuple[bytes, bytes]:
    body = {"id": item_id, "domain": domain, "output": {"text": item_id}, **fields}
    return item_id.encode(), orjson.dumps(body)


async def _audit(settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]


async def _chain_intact(settings: Settings) -> bool:
    rows = sorted((r.partition, r.offset, r.value) for r in await read_all(settings.topics.audit))
    return verify(rows).first_break is None


def _api(gateway: Any) -> httpx.AsyncClient:
    assert gateway.http is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http.port}", timeout=30)


async def test_a_language_no_pool_speaks_is_decided_in_the_fallback_pool(tmp_path: Path) -> None:
    chat = (CONFIGS / "policies" / "support-chat.yaml").read_text()
    settings, tokens = await _configs(tmp_path, {"support-chat.yaml": chat})
    gateway, task = await start_gateway(settings)
    try:
        await produce(
            settings.topics.outputs,
            [_record("pt1", "support-chat", confidence=0.2, language="pt-BR")],
        )
        async with _api(gateway) as http:
            lu = {"Authorization": f"Bearer {tokens['lu']}"}

            async def held() -> bool:
                return (await http.get("/v1/items/pt1", headers=lu)).status_code == 200

            await wait_until(held, timeout_s=30)
            item = (await http.get("/v1/items/pt1", headers=lu)).json()
            assert (item["pool"], item["blocking"]) == ("language-desk", True)
            assert {"rule": "language", "detail": "no pool speaks 'pt-BR': fallback pool "
                    "language-desk"} in item["reasons"]  # fmt: skip
            eve = {"Authorization": f"Bearer {tokens['eve']}"}
            assert (await http.get("/v1/items/pt1", headers=eve)).status_code == 403
            decision = {"decision_id": "d1", "verdict": "approve",
                        "content_hash": item["content_hash"]}  # fmt: skip
            approved = await http.post("/v1/items/pt1/decisions", headers=lu, json=decision)
            assert (approved.status_code, approved.json()["state"]) == (200, "approved")
        assert [r.key for r in await read_all(settings.topics.delivered)] == [b"pt1"]
        tasks = [orjson.loads(r.value) for r in await read_all(settings.topics.review_tasks)]
        assert [t["pool"] for t in tasks] == ["language-desk"]  # never "unassigned"
        sample = gateway.metrics.registry.get_sample_value(
            "hitl_fallback_routed_total", {"domain": "support-chat", "pool": "language-desk"}
        )
        assert sample == 1
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)


CHAT = """\
domain: chat
confidence_cascade: {below: 0.5, pool: general-graders, sla: 10s}
"""
# The cascade declares no chain: it inherits this one (routing.yaml's review_defaults).
CHAIN = """\
review_defaults:
  fallback_pool: language-desk
  escalation:
    - {after: 1s, pool: review-leads, alert: true}
    - {after: 2s, pool: domain-experts, alert: false}
    - {after: 3s, pool: compliance-auditors, alert: true}
"""


async def test_a_cascade_hold_escalates_along_its_chain_and_alerts_once_per_step(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    await receiver.start()
    settings, _ = await _configs(tmp_path, {"chat.yaml": CHAT}, routing=CHAIN)
    notify = NotifySettings(
        webhook_url=SecretStr(receiver.url), format="slack", sla_warning_share=0.5,
        backoff_initial_s=0.05, backoff_max_s=0.2,
    )  # fmt: skip
    settings = settings.model_copy(update={"notify": notify})
    gateway, task = await start_gateway(settings)
    index = HoldIndex(settings.redis)
    try:
        await produce(settings.topics.outputs, [_record("c1", "chat", confidence=0.1)])

        async def escalated_thrice() -> bool:
            held = await index.get("c1")
            return held is not None and held.meta.pool == "compliance-auditors"

        await wait_until(escalated_thrice, timeout_s=40)
        await asyncio.sleep(1.5)  # several more sweeps: nothing is due again
        # Slack's incoming-webhook body: the message is in its section block.
        texts = [orjson.loads(r.body)["blocks"][0]["text"]["text"] for r in receiver.requests]
        assert len(texts) == 3, texts  # the warning and the two steps with alert: true
        assert "c1 (chat) waits in general-graders: its SLA ends in" in texts[0]
        assert "escalated from general-graders to review-leads (step 1)" in texts[1]
        assert "escalated from domain-experts to compliance-auditors (step 3)" in texts[2]
        kinds = Counter(e["type"] for e in await _audit(settings) if e.get("item_id") == "c1")
        assert (kinds["sla_warning"], kinds["sla_breached"], kinds["escalated"]) == (1, 1, 3)
        tasks = [orjson.loads(r.value) for r in await read_all(settings.topics.review_tasks)]
        assert [t["pool"] for t in tasks] == [
            "general-graders", "review-leads", "domain-experts", "compliance-auditors"
        ]  # fmt: skip
        assert await read_all(settings.topics.delivered) == []  # fail-closed
        assert await _chain_intact(settings)
        sent = gateway.metrics.registry.get_sample_value(
            "hitl_notifications_total", {"kind": "escalation", "outcome": "sent"}
        )
        assert sent == 2
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await index.stop()
        await receiver.stop()
        await delete_topics(settings)


async def test_a_pool_added_by_reload_picks_up_the_holds_that_waited_for_it(
    tmp_path: Path,
) -> None:
    translations = (CONFIGS / "policies" / "translations.yaml").read_text()
    settings, _ = await _configs(tmp_path, {"translations.yaml": translations})
    gateway, task = await start_gateway(settings)
    index = HoldIndex(settings.redis)
    waiting = [f"pt{n}" for n in range(6)]
    try:
        await produce(
            settings.topics.outputs,
            [_record(i, "translations", confidence=0.1, language="pt-BR") for i in waiting]
            + [_record("de1", "translations", confidence=0.1, language="de")],
        )

        async def pools() -> dict[str, str]:
            found = {i: await index.get(i) for i in [*waiting, "de1"]}
            return {i: h.meta.pool for i, h in found.items() if h is not None}

        async def all_held() -> bool:
            return len(await pools()) == len(waiting) + 1

        await wait_until(all_held, timeout_s=30)
        assert set((await pools()).values()) == {"language-desk", "native-de"}
        # A Portuguese pool is hired: pools.yaml and the domain's language map, reloaded.
        with (tmp_path / "pools.yaml").open("a") as f:
            f.write(
                "  - {name: native-pt, languages: [pt], skills: [translation, general],"
                " cost_per_hour_usd: 60, cases_per_hour: 35, reviewers: 2, hours_per_week: 40}\n"
            )
        policy = tmp_path / "policies" / "translations.yaml"
        mapped = "    ja: native-ja\n    pt: native-pt\n"
        policy.write_text(policy.read_text().replace("    ja: native-ja\n", mapped))

        async def moved() -> bool:
            found = await pools()
            return all(found.get(i) == "native-pt" for i in waiting)

        await wait_until(moved, timeout_s=30)
        assert (await pools())["de1"] == "native-de"  # not waiting for anyone: untouched
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
    # A restart re-checks every partition: nothing moves twice.
    gateway, task = await start_gateway(settings)
    try:
        await asyncio.sleep(1.5)
        rerouted = Counter(e["item_id"] for e in await _audit(settings) if e["type"] == "rerouted")
        assert rerouted == dict.fromkeys(waiting, 1)
        events = [e for e in await _audit(settings) if e["type"] == "rerouted"]
        assert {(e["from_pool"], e["pool"]) for e in events} == {("language-desk", "native-pt")}
        tasks = [orjson.loads(r.value) for r in await read_all(settings.topics.review_tasks)]
        moved_tasks = [t for t in tasks if t["pool"] == "native-pt"]
        assert sorted(t["item_id"] for t in moved_tasks) == waiting
        assert moved_tasks[0]["reasons"] == [{
            "rule": "rerouted",
            "detail": "'pt-BR' reviewed by native-pt, which has skill general",
        }]  # fmt: skip
        assert await _chain_intact(settings)
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await index.stop()
        await delete_topics(settings)


async def test_an_operator_reassigns_an_item_and_is_refused_where_it_cannot_go(
    tmp_path: Path,
) -> None:
    chat = (CONFIGS / "policies" / "support-chat.yaml").read_text()
    settings, tokens = await _configs(tmp_path, {"support-chat.yaml": chat})
    gateway, task = await start_gateway(settings)
    try:
        await produce(settings.topics.outputs, [_record("e1", "support-chat", confidence=0.2,
                                                        language="en")])  # fmt: skip
        async with _api(gateway) as http:
            op = {"Authorization": f"Bearer {tokens['op']}"}

            async def held() -> bool:
                return (await http.get("/v1/items/e1", headers=op)).status_code == 200

            await wait_until(held, timeout_s=30)
            body = {"item_id": "e1", "to_pool": "review-leads", "reason": "triage"}
            eve = {"Authorization": f"Bearer {tokens['eve']}"}
            assert (await http.post("/v1/reassignments", headers=eve, json=body)).status_code == 403
            ja = await http.post(
                "/v1/reassignments", headers=op, json={**body, "to_pool": "native-ja"}
            )
            assert (ja.status_code, ja.json()["detail"]) == (
                409, "pool 'native-ja' does not serve language 'en'"
            )  # fmt: skip
            nowhere = await http.post("/v1/reassignments", headers=op,
                                      json={**body, "to_pool": "nobody"})  # fmt: skip
            assert nowhere.status_code == 422
            both = await http.post("/v1/reassignments", headers=op, json={**body, "pool": "x"})
            assert both.status_code == 422
            done = await http.post("/v1/reassignments", headers=op,
                                   json={**body, "request_id": "r1"})  # fmt: skip
            assert (done.status_code, done.json()["moved"], done.json()["done"]) == (200, 1, True)
            # A request id is applied once: sent again, the first result comes back.
            repeat = await http.post("/v1/reassignments", headers=op,
                                     json={**body, "request_id": "r1"})  # fmt: skip
            assert (repeat.status_code, repeat.json()["moved"]) == (200, 1)
            forged = await http.post("/v1/reassignments", headers=op,
                                     json={**body, "after": "zzz", "moved": 7})  # fmt: skip
            assert forged.status_code == 422  # a continuation's fields are not a request's
            again = (await http.get("/v1/reassignments/r1", headers=op)).json()
            assert again["done"] is True
            assert (again["moved"], again["to_pool"], again["what"]) == (1, "review-leads",
                                                                          "item e1")  # fmt: skip
            lee = {"Authorization": f"Bearer {tokens['lee']}"}
            item = (await http.get("/v1/items/e1", headers=lee)).json()
            assert item["pool"] == "review-leads"
            decision = {"decision_id": "d1", "verdict": "reject", "reason": "off-topic",
                        "content_hash": item["content_hash"]}  # fmt: skip
            rejected = await http.post("/v1/items/e1/decisions", headers=lee, json=decision)
            assert (rejected.status_code, rejected.json()["state"]) == (200, "rejected")
        (event,) = [e for e in await _audit(settings) if e["type"] == "reassigned"]
        assert (event["operator"], event["from_pool"], event["pool"], event["reason"]) == (
            "op", "general-graders", "review-leads", "triage"
        )  # fmt: skip
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "hitl_gateway.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_a_bulk_reassignment_is_applied_once_despite_a_kill(tmp_path: Path) -> None:
    chat = (CONFIGS / "policies" / "support-chat.yaml").read_text()
    # One hold per transaction: a long run of commits to kill the gateway in the middle of.
    settings, _ = await _configs(tmp_path, {"support-chat.yaml": chat}, reassign_chunk=1)
    items = [f"b{n:03d}" for n in range(120)]
    gateway = GatewayProcess(settings, tmp_path, "gateway")
    index = HoldIndex(settings.redis)
    try:
        records = [_record(i, "support-chat", confidence=0.2, language="en") for i in items]
        await produce(settings.topics.outputs, records)
        gateway.start()

        async def all_held() -> bool:
            return len(await index.members("general-graders")) == len(items)

        await wait_until(all_held, timeout_s=60)
        args = ("holds", "reassign", "--pool", "general-graders", "--to", "review-leads",
                "--reason", "leads take the backlog", "--operator", "op",
                "--request-id", "bulk1", "--wait", "0")  # fmt: skip
        submitted = await asyncio.to_thread(_cli, settings, *args)
        assert submitted.returncode in (0, 2), submitted.stderr

        async def some_moved() -> bool:
            return len(await index.members("review-leads")) >= 10

        await wait_until(some_moved, timeout_s=60, interval_s=0.05)
        gateway.kill()
        at_kill = len(await index.members("review-leads"))
        assert at_kill < len(items), "the kill came too late to test anything"
        gateway.start()
        partitions = list(range(settings.topics.partitions))

        async def done() -> bool:
            return bool((await progress(index, "bulk1", "op", partitions))["done"])

        await wait_until(done, timeout_s=90)
        found = await progress(index, "bulk1", "op", partitions)
        assert (found["moved"], found["refused"], found["errors"]) == (len(items), 0, [])
        assert sorted(await index.members("review-leads")) == items
        assert await index.members("general-graders") == []
        events = [e for e in await _audit(settings) if e["type"] == "reassigned"]
        assert Counter(e["item_id"] for e in events) == dict.fromkeys(items, 1)  # once each
        assert await _chain_intact(settings)
    finally:
        gateway.kill()
        await index.stop()
        await delete_topics(settings)
