"""The stop switch against the real broker and Redis: switched on over the API while records
of the domain arrive, every record of the domain from the effective input offset on is held
(the ones before it delivered, as their source offsets show) and other domains pass; the
switch survives a takeover, a SIGKILL and restart, and Redis losing its data; switched off
from the CLI, records pass again; the audit trail has both events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from hitl_gateway import headers
from hitl_gateway.admin import ensure_topics
from hitl_gateway.audit_verify import verify
from hitl_gateway.holds import HoldIndex
from hitl_gateway.review.stop_switch import current
from hitl_gateway.settings import ReviewSettings, Settings
from hitl_gateway.stopswitch import RULE

from .gateways import start_gateway, write_reviewers
from .kafka_io import (
    CONFIGS,
    FIXTURES,
    REDIS_URL,
    delete_topics,
    fresh_settings,
    produce,
    read_all,
    settings_env,
    wait_until,
)
from .processes import GatewayProcess

POOL = "review-leads"
GRANTS = {"op": ['"*"'], "chat-op": ['"*"'], "eve": ["general-graders"]}


async def _configs(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "pools.yaml").write_text((CONFIGS / "pools.yaml").read_text())
    (tmp_path / "routing.yaml").write_text((CONFIGS / "routing.yaml").read_text())
    for name in ("d.yaml", "support-chat.yaml"):  # both pass every record
        text = (FIXTURES / "passthrough" / "policies" / name).read_text()
        (tmp_path / "policies" / name).write_text(text)
    tokens = write_reviewers(
        tmp_path / "reviewers.yaml", GRANTS, domains={"chat-op": ["support-chat"]},
        operators=["op", "chat-op"],
    )  # fmt: skip
    settings = fresh_settings(policy_dir=tmp_path / "policies")
    review = ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml", decision_wait_s=20)
    settings = settings.model_copy(update={"review": review})
    await ensure_topics(settings)
    return settings, tokens


def _records(prefix: str, n: int, domain: str) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        body = {"id": f"{prefix}{i}", "domain": domain, "output": {"text": "x"}}
        out.append((f"{prefix}{i}".encode(), orjson.dumps(body)))
    return out


COUNTS = {"a": 12, "b": 12, "c": 6, "e": 6, "f": 6, "g": 6, "h": 6, "k": 6, "r": 60}


async def _trickle(settings: Settings, prefix: str, n: int) -> None:
    """``n`` records of domain d, a few at a time (each through its own producer)."""
    records = _records(prefix, n, "d")
    for start in range(0, n, 3):
        await produce(settings.topics.outputs, records[start : start + 3])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "hitl_gateway.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _source(hdrs: list[tuple[str, bytes]]) -> tuple[int, int]:
    found = dict(hdrs)
    return int(found[headers.SOURCE_PARTITION]), int(found[headers.SOURCE_OFFSET])


async def _delivered(settings: Settings) -> dict[str, tuple[int, int]]:
    """Delivered records: item id -> (input partition, input offset)."""
    return {
        orjson.loads(r.value)["id"]: _source(list(r.headers))
        for r in await read_all(settings.topics.delivered)
    }


async def _held(index: HoldIndex) -> dict[str, tuple[int, int]]:
    out = {}
    for item_id in await index.members(POOL):
        held = await index.get(item_id)
        assert held is not None
        assert held.meta.rule == RULE
        source = held.meta.source or {}
        out[item_id] = (int(source["partition"]), int(source["offset"]))
    return out


async def _flush(settings: Settings) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis.key_prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_the_stop_switch_holds_by_offset_and_survives_restarts(tmp_path: Path) -> None:
    settings, tokens = await _configs(tmp_path)
    index = HoldIndex(settings.redis)
    process = GatewayProcess(settings, tmp_path, "gateway")
    gateway, task = await start_gateway(settings)
    try:
        assert gateway.http is not None
        base = f"http://127.0.0.1:{gateway.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await produce(settings.topics.outputs, _records("a", 12, "d"))
            await produce(settings.topics.outputs, _records("c", 6, "support-chat"))

            async def delivered(n: int) -> Any:
                async def check() -> bool:
                    return len(await _delivered(settings)) >= n

                return check

            await wait_until(await delivered(18), timeout_s=30)
            op = {"Authorization": f"Bearer {tokens['op']}"}
            body = {"domain": "d", "on": True, "pool": POOL, "reason": "incident 7",
                    "request_id": "stop1"}  # fmt: skip
            eve = {"Authorization": f"Bearer {tokens['eve']}"}
            assert (await http.post("/v1/stop-switch", headers=eve, json=body)).status_code == 403
            chat_op = {"Authorization": f"Bearer {tokens['chat-op']}"}
            refused = await http.post("/v1/stop-switch", headers=chat_op, json=body)
            assert refused.status_code == 403, refused.text  # not granted domain d
            # Records of d keep arriving while the command is applied: the first are delivered
            # before the switch takes effect, the rest held.
            racing = asyncio.create_task(_trickle(settings, "r", COUNTS["r"]))

            async def racing_delivered() -> bool:
                return any(i.startswith("r") for i in await _delivered(settings))

            await wait_until(racing_delivered, timeout_s=30, interval_s=0.02)
            on = await http.post("/v1/stop-switch", headers=op, json=body)
            await racing
            assert on.status_code == 200, on.text
            assert on.json()["errors"] == []
            effective = {int(p): o for p, o in on.json()["effective_offsets"].items()}
            assert len(effective) == settings.topics.partitions
            sample = gateway.metrics.registry.get_sample_value
            assert sample("hitl_stop_switch", {"domain": "d"}) == 1
            state = (await http.get("/v1/stop-switch", headers=op)).json()
            assert [(s["domain"], s["on"]) for s in state["switches"]] == [("d", True)]

            await produce(settings.topics.outputs, _records("b", 12, "d"))
            await produce(settings.topics.outputs, _records("e", 6, "support-chat"))

            async def settled(*prefixes: str) -> Any:
                wanted = {f"{p}{i}" for p in prefixes for i in range(COUNTS[p])}

                async def check() -> bool:
                    seen = set(await _delivered(settings)) | set(await index.members(POOL))
                    return wanted <= seen

                return check

            await wait_until(await settled("b", "e", "r"), timeout_s=30)
        # A takeover (graceful), then the taker is SIGKILLed and restarted.
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        process.start()
        await produce(settings.topics.outputs, _records("f", 6, "d"))
        await wait_until(await settled("f"), timeout_s=60)
        process.kill()
        process.start()
        await produce(settings.topics.outputs, _records("g", 6, "d"))
        await wait_until(await settled("g"), timeout_s=60)
        # Redis loses its data: the index, the switch with it, is rebuilt from the holds topic.
        process.kill()
        await _flush(settings)
        process.start()
        await produce(settings.topics.outputs, _records("h", 6, "d"))
        await wait_until(await settled("h"), timeout_s=60)
        switched = await current(index, settings.topics.partitions)
        assert [(s["domain"], s["on"]) for s in switched["switches"]] == [("d", True)]

        off = await asyncio.to_thread(
            _cli, settings, "stop-switch", "off", "--domain", "d", "--reason", "resolved",
            "--operator", "op", "--request-id", "stop2",
        )  # fmt: skip
        assert off.returncode == 0, off.stdout + off.stderr
        ended = {int(p): o for p, o in orjson.loads(off.stdout)["effective_offsets"].items()}
        await produce(settings.topics.outputs, _records("k", 6, "d"))
        await wait_until(await settled("k"), timeout_s=60)

        out, holds = await _delivered(settings), await _held(index)
        d_ids = [f"{p}{i}" for p in "abfghkr" for i in range(COUNTS[p])]
        assert sorted(i for i in d_ids if i in out or i in holds) == sorted(d_ids)
        for item_id, (p, offset) in holds.items():  # held: from the switch on to its off
            assert effective[p] <= offset < ended[p], (item_id, p, offset)
            assert item_id not in out
        for item_id in d_ids:
            if item_id in out:
                p, offset = out[item_id]
                assert offset < effective[p] or offset >= ended[p], (item_id, p, offset)
        assert {i for i in out if i[0] in "ce"} == {f"{p}{i}" for p in "ce" for i in range(6)}
        # Every record of d while on is held (b, f, g, h); before and after, delivered (a, k);
        # of those arriving meanwhile (r), some were delivered and some held.
        assert {i for i in d_ids if i[0] in "bfgh"} <= set(holds)
        assert {i for i in d_ids if i[0] in "ak"} <= set(out)
        assert any(i[0] == "r" for i in out)
        assert any(i[0] == "r" for i in holds)
        audit = [orjson.loads(r.value) for r in await read_all(settings.topics.audit)]
        kinds = [e["type"] for e in audit if e["type"].startswith("stop_switch")]
        assert sorted(kinds) == ["stop_switch_off"] * 3 + ["stop_switch_on"] * 3
        rows = sorted(
            (r.partition, r.offset, r.value) for r in await read_all(settings.topics.audit)
        )
        assert verify(rows).first_break is None
    finally:
        process.kill()
        if not task.done():
            gateway.request_stop()
            await asyncio.wait_for(task, 30)
        await index.stop()
        await delete_topics(settings)
