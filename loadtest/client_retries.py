"""How often the Kafka client retries under load, why, and what a retry costs in latency.

    .venv/bin/python loadtest/client_retries.py --rate 2000 --seconds 75

Runs the gateway (exactly once, the realistic domain mix of generate.py, the shipped
policies) on fresh topics of the local stack at DEBUG level, offers ``rate`` records a second,
and reads the delivered topic read_committed, timing each record from its send. Expected
client retries are DEBUG lines (``logs.ExpectedRetries``) and the counter
``hitl_kafka_client_retries_total``; this prints both, and the end-to-end latency of records
delivered within a second after a retry against all the others. Figures: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate
from bench import GATEWAY, GATEWAY_OUTPUTS, Mode, cleanup, stop

_RETRY = re.compile(
    r"(NotEnoughReplicas\w*|\w*Coordinator\w*Error|RebalanceInProgressError"
    r"|IllegalGenerationError|ConcurrentTransactions|\w*Leader\w*Error)"
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


def retries_in(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, error) of every expected-retry DEBUG line the gateway wrote."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = orjson.loads(line)
        if event.get("level") != "debug" or not str(event.get("logger", "")).startswith("aiokafka"):
            continue
        match = _RETRY.search(str(event.get("event")))
        stamp = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        found.append((stamp.timestamp(), match.group(1) if match else "?"))
    return found


def counter_total(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("hitl_kafka_client_retries_total{"):
            name = line.split('error="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def main(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:8]
    source = f"bench.{run_id}.in"
    await generate.create_topic(args.bootstrap, source, args.partitions)
    mode = Mode("D-tx", args.bootstrap, args.partitions, log_dir=Path(args.log_dir))
    env = mode.gateway_env(run_id, source, f"retries-{run_id}")
    env |= {"HITL_RUNTIME__LOG_LEVEL": "DEBUG", "HITL_HTTP__ENABLED": "true",
            "HITL_HTTP__PORT": str(args.http_port)}  # fmt: skip
    env |= dict(kv.split("=", 1) for kv in args.env)
    log_path = Path(args.log_dir) / f"client-retries-{run_id}.log"
    delivered = f"bench.{run_id}.delivered"
    with log_path.open("wb") as log:
        subprocess.run([str(GATEWAY), "topics", "ensure"], env=env, check=True, stdout=log,
                       stderr=log)  # fmt: skip
        proc = subprocess.Popen([str(GATEWAY), "run"], env=env, stdout=log, stderr=log)
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, isolation_level="read_committed",
                                fetch_max_wait_ms=5)  # fmt: skip
    arrivals: list[tuple[float, float]] = []  # (epoch seconds received, latency ms)
    retries_seen: dict[str, float] = {}
    try:
        await consumer.start()
        tps = [TopicPartition(delivered, p) for p in range(args.partitions)]
        consumer.assign(tps)
        producer = asyncio.create_task(generate.offered_rate(
            args.bootstrap, source, args.rate, args.seconds, quiet=True))  # fmt: skip
        quiet_since = time.monotonic()
        measure_from = time.time() + args.warmup_s
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time()
            for records in batch.values():
                arrivals += [(now, now * 1000 - r.timestamp) for r in records
                             if r.timestamp >= measure_from * 1000]  # fmt: skip
            if batch:
                quiet_since = time.monotonic()
            if producer.done() and time.monotonic() - quiet_since > 3.0:
                break
        offered = await producer
        retries_seen = counter_total(args.http_port)
    finally:
        await consumer.stop()
        stop(proc)
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        try:
            await cleanup(admin, [source, *[f"bench.{run_id}.{n}" for n in GATEWAY_OUTPUTS]],
                          run_id)  # fmt: skip
        finally:
            await admin.close()
    retries = retries_in(log_path)
    stamps = sorted(t for t, _ in retries)
    near, far = [], []
    for received, latency in arrivals:
        i = bisect.bisect_right(stamps, received)
        (near if i and received - stamps[i - 1] <= 1.0 else far).append(latency)
    print(f"offered {offered:,} records at {args.rate:,.0f}/s;"
          f" {len(arrivals):,} delivered records timed after the warm-up")  # fmt: skip
    print(f"client retries (metric): {retries_seen or 'none'}")
    print(f"client retries (debug lines): {dict(Counter(e for _, e in retries)) or 'none'}")
    print(f"latency ms, all delivered: p50 {pct([x for _, x in arrivals], 0.5)}"
          f" p99 {pct([x for _, x in arrivals], 0.99)}")  # fmt: skip
    print(f"  within 1 s after a retry ({len(near):,}): p50 {pct(near, 0.5)} p99 {pct(near, 0.99)}")
    print(f"  the others ({len(far):,}): p50 {pct(far, 0.5)} p99 {pct(far, 0.99)}")
    if retries:
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        print(f"retries span {stamps[-1] - stamps[0]:.1f}s, median gap "
              f"{statistics.median(gaps) if gaps else 0:.2f}s; log: {log_path}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=75)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--warmup-s", type=float, default=5.0, help="records sent before this are not timed"
    )
    parser.add_argument("--http-port", type=int, default=18_780)
    parser.add_argument("--log-dir", default=tempfile.gettempdir())
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="HITL_X=Y",
        help="a setting for the gateway (repeatable)",
    )
    asyncio.run(main(parser.parse_args()))
