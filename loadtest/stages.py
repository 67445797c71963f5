"""The gateway's own work per record, stage by stage, without Kafka: decode, decide and build
outputs (``Router.route``), then the hold index update after a commit (``index_changes`` and
``HoldIndex.apply``), on the generated mix in batches of 1,000, budgets and index in the
real Redis.

    .venv/bin/python loadtest/stages.py [--records 20000] [--reps 3]
    .venv/bin/python loadtest/stages.py --instructions [--records 5000] [--audit-key]

Redis is ``HITL_REDIS__URL`` (default ``redis://127.0.0.1:6379/0``). ``--audit-key`` seals
the audit chain with a key, ending each batch with a checkpoint when one is due, as the
commit path does.

The first form prints CPU microseconds per record for each stage. On a shared machine those
move by 10% from minute to minute; ``--instructions`` counts the instructions per record
under valgrind instead (one pass minus a pass that only starts up), which repeat to within
0.3%, so a change that saves 2% shows. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_review
from hitl_gateway.audit import AuditChain, Sealing, SealingKey
from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.holds import HoldIndex
from hitl_gateway.ids import HeldIds
from hitl_gateway.index_entries import index_changes
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.routing import Router
from hitl_gateway.settings import PolicySettings, RedisSettings, Settings
from records import make_stream

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1_000


@dataclass
class Consumed:
    """The fields of an aiokafka ConsumerRecord the gateway reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


async def measure(
    records: int, reps: int, payload_bytes: int, invalid_share: float, audit_key: bool
) -> None:
    prefix = f"stages-{uuid.uuid4().hex[:8]}:"
    settings = Settings(
        redis=RedisSettings(
            url=os.environ.get("HITL_REDIS__URL", RedisSettings().url), key_prefix=prefix
        ),
        policy=PolicySettings(dir=ROOT / "configs" / "policies"),
    )
    policy = settings.policy
    policies = load_policy_set(policy.dir, policy.pools_file, policy.routing_file)
    budgets = RedisBudgets(settings.redis)
    ids = HeldIds(settings.redis)
    router = Router(settings, budgets, ids)
    index = HoldIndex(settings.redis)
    now_ms = int(time.time() * 1000)
    generated = make_stream(records, run_id=prefix, seed=3, payload_bytes=payload_bytes,
                            invalid_share=invalid_share)  # fmt: skip
    consumed = [
        Consumed("outputs", 0, n, now_ms + n, g.key, g.value) for n, g in enumerate(generated)
    ]
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000)  # as the gateway runs (cli.py)
    key = SealingKey("stages", b"k" * 32) if audit_key else None
    chain = AuditChain(sealing=Sealing(key))
    seconds = {"route": 0.0, "index_changes": 0.0, "index_apply": 0.0}
    produced = 0
    try:
        for _ in range(reps):
            for start in range(0, len(consumed), BATCH):
                t = time.process_time()
                out, _ = await router.route(consumed[start : start + BATCH], policies, chain)
                if chain.checkpoint(int(time.time() * 1000)) is not None:
                    produced += 1
                chain.commit()
                seconds["route"] += time.process_time() - t
                produced += len(out)
                t = time.process_time()
                written = [o for o in out if o.topic == settings.topics.holds]
                holds = ((o.key, o.value, o.headers) for o in written)
                upserts, removals = index_changes(holds, 0, [o.hold for o in written])
                seconds["index_changes"] += time.process_time() - t
                t = time.process_time()
                await index.apply(upserts, removals, {}, {})
                seconds["index_apply"] += time.process_time() - t
    finally:
        await budgets.stop()
        await ids.stop()
        await index.stop()
        await bench_review.drop_redis_keys(settings.redis.url, prefix)
    done = reps * len(consumed)
    if not done:
        return
    for stage, s in seconds.items():
        print(f"{stage:14s} {s * 1e6 / done:7.2f} CPU us/record")
    print(f"{'total':14s} {sum(seconds.values()) * 1e6 / done:7.2f} CPU us/record "
          f"({produced / done:.2f} output records per record)")  # fmt: skip


def instructions(args: argparse.Namespace) -> None:
    """Instructions per record: valgrind over one pass, minus valgrind over start-up only."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    counts = []
    for reps in (0, 1):
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                __file__, "--records", str(args.records), "--reps", str(reps), "--payload-bytes",
                str(args.payload_bytes), "--invalid-share", str(args.invalid_share),
                *(["--audit-key"] if args.audit_key else [])]  # fmt: skip
        run = subprocess.run(argv, capture_output=True, text=True, check=False,
                             env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            sys.exit(f"valgrind run failed ({run.returncode}): {run.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    sealed = "keyed" if args.audit_key else "unkeyed"
    print(f"instructions   {(counts[1] - counts[0]) / args.records:9,.0f} per record "
          f"(route and index update, {args.records:,} records, {sealed} audit chain)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--payload-bytes", type=int, default=1_024)
    parser.add_argument("--invalid-share", type=float, default=0.03)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under valgrind instead of timing")  # fmt: skip
    parser.add_argument("--audit-key", action="store_true",
                        help="seal the audit chain with a key (and its checkpoints)")  # fmt: skip
    args = parser.parse_args()
    if args.records < 1 or args.reps < 0:
        parser.error("--records must be at least 1 and --reps at least 0")
    if args.instructions:
        instructions(args)
    else:
        asyncio.run(measure(args.records, args.reps, args.payload_bytes, args.invalid_share,
                            args.audit_key))  # fmt: skip


if __name__ == "__main__":
    main()
