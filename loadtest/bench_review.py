"""Review-path benchmark on the local stack: decision-to-delivery latency through the real
API, pipeline and broker, and queue-listing latency (and Redis memory) with many holds.

    .venv/bin/python loadtest/bench_review.py [--decisions 300] [--holds 100000]

Prints a table and writes loadtest/results/review-<time>.json. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from hitl_gateway import __version__
from hitl_gateway.admin import ensure_topics
from hitl_gateway.app import Gateway
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.logs import configure_logging
from hitl_gateway.models import HoldMeta
from hitl_gateway.review.auth import new_token
from hitl_gateway.settings import (
    HttpSettings,
    KafkaSettings,
    PolicySettings,
    RedisSettings,
    ReviewSettings,
    Settings,
    TopicSettings,
)

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _settings(run: str, reviewers: Path) -> Settings:
    names = {
        f: f"bench{run}.{f}"
        for f in TopicSettings.model_fields
        if f not in ("partitions", "replication_factor", "min_insync_replicas")
    }
    return Settings(
        kafka=KafkaSettings(
            group_id=f"bench{run}", transactional_id_prefix=f"bench{run}", poll_timeout_ms=50
        ),
        topics=TopicSettings(**names),
        policy=PolicySettings(dir=ROOT / "configs" / "policies", reload_interval_s=0),
        # The listing is timed 300 times in a row: the per-reviewer request limit is off.
        review=ReviewSettings(reviewers_file=reviewers, rate_limit_requests=0),
        redis=RedisSettings(key_prefix=f"bench{run}:"),
        http=HttpSettings(port=0),
    )


async def decision_latency(
    settings: Settings, token: str, count: int, gateway: Gateway
) -> list[float]:
    """Hold ``count`` clinical summaries, then approve them one by one through the API and
    time each from the POST to the record arriving on the delivered topic (read_committed)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    for i in range(count):
        body = {"id": f"b{i}", "domain": "clinical-summaries", "output": {"text": "x" * 900}}
        await producer.send(settings.topics.outputs, orjson.dumps(body), key=f"b{i}".encode())
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, isolation_level="read_committed"
    )
    await consumer.start()
    tps = [TopicPartition(settings.topics.delivered, p) for p in range(settings.topics.partitions)]
    consumer.assign(tps)
    arrived: dict[str, float] = {}

    async def watch() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=50)).values():
                for r in records:
                    arrived[r.key.decode()] = time.perf_counter()

    watcher = asyncio.create_task(watch())
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    assert gateway.http is not None
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway.http.port}", timeout=30
    ) as http:
        for i in range(count):
            item = f"b{i}"
            while (
                shown := await http.get(f"/v1/items/{item}", headers=headers)
            ).status_code != 200:
                await asyncio.sleep(0.01)
            start = time.perf_counter()
            decision = {
                "decision_id": f"bd{i}",
                "verdict": "approve",
                "content_hash": shown.json()["content_hash"],
            }
            response = await http.post(
                f"/v1/items/{item}/decisions", json=decision, headers=headers
            )
            assert response.status_code == 200, response.text
            while item not in arrived:
                await asyncio.sleep(0.001)
            latencies.append(arrived[item] - start)
    watcher.cancel()
    await consumer.stop()
    return latencies


async def queue_listing(
    settings: Settings, token: str, holds: int, gateway: Gateway
) -> dict[str, float]:
    """Write ``holds`` held items for one pool into the index, then time queue pages."""
    client = aioredis.Redis.from_url(settings.redis.url)
    before = int((await client.info("memory"))["used_memory"])
    pool = "bench-pool"
    value = orjson.dumps({"id": "x", "domain": "clinical-summaries", "output": {"text": "y" * 900}})
    now = int(time.time() * 1000)
    chunk = 2_000
    for start in range(0, holds, chunk):
        batch = [
            IndexedHold(
                meta=HoldMeta.of(
                    {
                        "item_id": f"q{i}",
                        "domain": "clinical-summaries",
                        "pool": pool,
                        "reviewers": 1,
                        "sla_deadline_ms": now + i * 1_000,
                        "held_at_ms": now - i,
                        "content_hash": "sha256:" + "0" * 64,
                        "reasons": [{"rule": "mandatory_review", "detail": "bench"}],
                        "state": "pending",
                        "stage": "review",
                        "votes": [],
                        "next_check_ms": now + 10**9,
                    }
                ),
                value=value,
                key=f"q{i}".encode(),
                headers=[("hitl.route", b"hold")],
                partition=i % 3,
            )
            for i in range(start, min(start + chunk, holds))
        ]
        await gateway.index.apply(batch, [], {}, {})
    after = int((await client.info("memory"))["used_memory"])
    await client.aclose()
    headers = {"Authorization": f"Bearer {token}"}
    timings: list[float] = []
    assert gateway.http is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http.port}") as http:
        for i in range(300):
            offset = (i * 997) % (holds - 50)
            start = time.perf_counter()
            page = await http.get(
                f"/v1/pools/{pool}/items", params={"offset": offset, "limit": 50}, headers=headers
            )
            timings.append(time.perf_counter() - start)
            assert page.status_code == 200
            assert page.json()["total"] == holds
    return {
        "holds": holds,
        "page_size": 50,
        "p50_ms": _pct(timings, 0.5) * 1000,
        "p99_ms": _pct(timings, 0.99) * 1000,
        "redis_bytes_per_hold": (after - before) / holds,
    }


async def _clean_up(settings: Settings) -> None:
    """Drop the run's topics and Redis keys (100,000 holds are about 230 MB of Redis)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics(settings.topics.all_names())
    finally:
        await admin.close()
    await drop_redis_keys(settings.redis.url, settings.redis.key_prefix)


async def drop_redis_keys(url: str, prefix: str) -> None:
    """Unlink every key under ``prefix``, a few thousand at a time."""
    client = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


async def main(decisions: int, holds: int, out_dir: Path | None = None) -> dict[str, Any]:
    configure_logging("WARNING", "json")
    run = uuid.uuid4().hex[:8]
    token, digest = new_token()
    reviewers = Path(f"/tmp/bench-reviewers-{run}.yaml")  # noqa: S108 - a throwaway file
    reviewers.write_text(f"reviewers:\n  - {{id: bench, token_sha256: {digest}, pools: ['*']}}\n")
    settings = _settings(run, reviewers)
    await ensure_topics(settings)
    gateway = Gateway(settings, CollectorRegistry())
    task = asyncio.create_task(gateway.run())
    while not gateway.ready():
        await asyncio.sleep(0.05)
    try:
        latencies = await decision_latency(settings, token, decisions, gateway)
        listing = await queue_listing(settings, token, holds, gateway)
    finally:
        gateway.request_stop()
        await task
        reviewers.unlink()
        await _clean_up(settings)
    result = {
        "gateway_version": __version__,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "decision_to_delivery": {
            "decisions": decisions,
            "p50_ms": _pct(latencies, 0.5) * 1000,
            "p99_ms": _pct(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000,
        },
        "queue_listing": listing,
    }
    d, q = result["decision_to_delivery"], listing
    print(f"decision -> delivered (read_committed), {decisions} approvals via the API:")
    print(f"  p50 {d['p50_ms']:.1f} ms   p99 {d['p99_ms']:.1f} ms   mean {d['mean_ms']:.1f} ms")
    print(f"queue listing, {holds:,} holds in one pool, pages of 50 at random offsets:")
    per_hold = q["redis_bytes_per_hold"]
    print(f"  p50 {q['p50_ms']:.1f} ms   p99 {q['p99_ms']:.1f} ms", end="")
    print(f"   Redis {per_hold:.0f} bytes per hold")
    out_dir = out_dir or ROOT / "loadtest" / "results"
    out = out_dir / f"review-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--holds", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.decisions, args.holds))
