"""The equal-work plan for the passthrough (mode A-eq): per input record, the records the
gateway writes for the generated mix (topic, value size, headers) and, per held record, its
hold index entry's size, taken from the gateway's own router on a sample of the same mix.

    .venv/bin/python loadtest/equal_work.py --out plan.json [--records 2000]

The passthrough applies the sample's shapes in turn (input n takes shape n mod the sample's
size), so over a drain it writes as many records of the same sizes per input as the gateway
does, to topics of the same names, and as many Redis writes per held record. Used by
loadtest/bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_review
from hitl_gateway import headers
from hitl_gateway.audit import AuditChain
from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.ids import HeldIds
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.routing import Router
from hitl_gateway.settings import PolicySettings, RedisSettings, Settings, TopicSettings
from records import make_stream
from stages import BATCH, Consumed

ROOT = Path(__file__).resolve().parent.parent
_KINDS = {getattr(TopicSettings(), name): name for name in TopicSettings.model_fields}


async def make_plan(
    records: int, payload_bytes: int, invalid_share: float, redis_url: str
) -> list[list[dict[str, Any]]]:
    """Per sampled input: its outputs, each ``{"kind", "value", "headers", "hold"}`` (value
    size, header name and value sizes, the hold's metadata size or 0)."""
    prefix = f"plan-{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis=RedisSettings(url=redis_url, key_prefix=prefix),
                        policy=PolicySettings(dir=ROOT / "configs" / "policies"))  # fmt: skip
    policies = load_policy_set(settings.policy.dir)
    budgets, ids = RedisBudgets(settings.redis), HeldIds(settings.redis)
    router = Router(settings, budgets, ids)
    now_ms = int(time.time() * 1000)
    generated = make_stream(records, run_id=prefix, seed=3, payload_bytes=payload_bytes,
                            invalid_share=invalid_share)  # fmt: skip
    consumed = [Consumed("outputs", n % 3, n, now_ms + n, g.key, g.value)
                for n, g in enumerate(generated)]  # fmt: skip
    chain = AuditChain()
    plan: list[list[dict[str, Any]]] = [[] for _ in consumed]
    try:
        for start in range(0, len(consumed), BATCH):
            out, _ = await router.route(consumed[start : start + BATCH], policies, chain)
            chain.commit()
            for o in out:
                n = _source_offset(o)
                meta = next((v for k, v in o.headers if k == headers.HOLD), b"")
                plan[n].append({
                    "kind": _KINDS[o.topic],
                    "value": len(o.value or b""),
                    "headers": [(k, len(v)) for k, v in o.headers],
                    "hold": len(meta),
                })  # fmt: skip
    finally:
        await budgets.stop()
        await ids.stop()
        await bench_review.drop_redis_keys(redis_url, prefix)
    return plan


def _source_offset(o: Any) -> int:
    """The input a record was written for: its source offset header, or its hold's or
    task's or audit event's ``source``."""
    for k, v in o.headers:
        if k == headers.SOURCE_OFFSET:
            return int(v)
    if o.hold is not None:
        return int(o.hold.source["offset"])
    body = orjson.loads(o.value)
    return int(body["source"]["offset"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--records", type=int, default=2_000)
    parser.add_argument("--payload-bytes", type=int, default=1_024)
    parser.add_argument("--invalid-share", type=float, default=0.0)
    args = parser.parse_args()
    url = os.environ.get("HITL_REDIS__URL", RedisSettings().url)
    plan = asyncio.run(make_plan(args.records, args.payload_bytes, args.invalid_share, url))
    args.out.write_bytes(orjson.dumps(plan))
    outputs = sum(len(p) for p in plan)
    print(
        f"{outputs / len(plan):.3f} output records per input, "
        f"{sum(1 for p in plan for o in p if o['hold']) / len(plan):.3f} holds per input"
    )


if __name__ == "__main__":
    main()
