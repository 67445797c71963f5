"""The demo: stream realistic model outputs through the real broker and the gateway, then
show what happened (counts per route, dead letters by reason, the metrics endpoint).

Run it with ``make demo`` (which installs and starts the local stack first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hitl_gateway.admin import ensure_topics
from hitl_gateway.app import Gateway
from hitl_gateway.logs import configure_logging
from hitl_gateway.review.auth import new_token
from hitl_gateway.review.signing import new_key
from hitl_gateway.settings import DecisionSettings, Settings, load_settings
from records import make_stream


async def _end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return offsets
    finally:
        await consumer.stop()


async def _produce(settings: Settings, records: list, rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    try:
        for i, rec in enumerate(records):
            await producer.send(settings.topics.outputs, rec.value, key=rec.key)
            if rate and i % 100 == 99:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def _collect(
    settings: Settings,
    start: dict[TopicPartition, int],
    run_id: str,
    expected: int,
    timeout_s: float,
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Read this run's outputs (read_committed) until every record is accounted for."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, isolation_level="read_committed"
    )
    await consumer.start()
    routes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    pools: Counter[str] = Counter()
    prefix = run_id.encode()
    t = settings.topics
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and sum(routes.values()) >= expected:
                break  # every record accounted for, and the review tasks drained
            for records in batch.values():
                for rec in records:
                    if not (rec.key or b"").startswith(prefix):  # ids and keys carry the run id
                        continue
                    hdrs = dict(rec.headers)
                    if rec.topic == t.review_tasks:
                        pools[orjson.loads(rec.value)["pool"]] += 1
                    elif rec.topic == t.deadletter:
                        routes["deadletter"] += 1
                        reasons[hdrs["hitl.dlq.reason"].decode()] += 1
                    elif rec.topic == t.delivered or hdrs["hitl.route"] == b"hold":
                        routes[hdrs["hitl.route"].decode()] += 1  # (non-blocking reviews
                        # also wait on the holds topic: they were counted as delivered)
    finally:
        await consumer.stop()
    return routes, reasons, pools


def _scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith("hitl_")
        and "_created" not in line
        and not line.startswith("hitl_batch")
        and not line.endswith(" 0.0")
    ]


async def _review(settings: Settings, gateway: Gateway, token: str, run_id: str) -> tuple[int, int]:
    """A clinician works through the clinicians queue: approve this run's held items (one in
    five is edited), then count what reached the delivered topic."""
    assert gateway.http is not None
    headers = {"Authorization": f"Bearer {token}"}
    decided = 0
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway.http.port}", timeout=30
    ) as http:
        page = await http.get("/v1/pools/clinicians/items", params={"limit": 500}, headers=headers)
        items = [i for i in page.json()["items"] if i["item_id"].startswith(run_id)][:25]
        for n, item in enumerate(items):
            decision: dict[str, object] = {
                "decision_id": f"{item['item_id']}-review",
                "verdict": "approve",
                "content_hash": item["content_hash"],
            }
            if n % 5 == 0:
                decision.update(verdict="edit", edited_output={"text": "reviewed summary"})
            response = await http.post(
                f"/v1/items/{item['item_id']}/decisions", json=decision, headers=headers
            )
            decided += response.status_code == 200
    return len(items), decided


async def main(count: int, rate: float, invalid_share: float, serve: bool) -> int:
    token, digest = new_token()
    person, person_digest = new_token()  # for whoever opens the workspace
    reviewers = Path(".cache") / "demo-reviewers.yaml"
    reviewers.parent.mkdir(exist_ok=True)
    reviewers.write_text(
        "reviewers:\n"
        f"  - {{id: demo-clinician, token_sha256: {digest}, pools: [clinicians]}}\n"
        f"  - {{id: demo-reviewer, token_sha256: {person_digest}, pools: ['*'], operator: true}}\n"
    )
    # Decisions on the topic are signed: the API's with this gateway key (docs/security.md).
    keys = Path(".cache") / "demo-decision-keys.yaml"
    if not keys.is_file():
        keys.write_text(new_key("demo-gateway", "hmac-sha256")[1])
        keys.chmod(0o600)
    settings = load_settings()
    review = settings.review.model_copy(update={"reviewers_file": reviewers})
    signing = DecisionSettings(keys_file=keys, gateway_key_id="demo-gateway")
    settings = settings.model_copy(update={"review": review, "decisions": signing})
    configure_logging(settings.runtime.log_level, "console")
    await ensure_topics(settings)
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    records = make_stream(count, run_id=run_id, invalid_share=invalid_share)
    t = settings.topics
    start = await _end_offsets(settings, [t.delivered, t.deadletter, t.holds, t.review_tasks])
    gateway = Gateway(settings)
    gateway_task = asyncio.create_task(gateway.run())
    print(f"demo: gateway running; producing {count} records to {settings.topics.outputs}")
    began = time.monotonic()
    await _produce(settings, records, rate)
    routes, reasons, pools = await _collect(settings, start, run_id, count, timeout_s=120)
    took = time.monotonic() - began
    held, approved = await _review(settings, gateway, token, run_id)
    metrics = await asyncio.to_thread(_scrape, gateway.http.port) if gateway.http else []

    accounted = sum(routes.values())
    print(f"\ndemo: {accounted}/{count} records accounted for in {took:.1f}s (run id {run_id})")
    print("\nroutes:")
    for route, n in sorted(routes.items()):
        print(f"  {route:20} {n:7}")
    print("\nreview tasks by pool:")
    for pool, n in sorted(pools.items()):
        print(f"  {pool:20} {n:7}")
    print(
        f"\nreview: a clinician took {held} held clinical summaries from the queue over the "
        f"API and decided {approved} (one in five edited); they are now on "
        f"{settings.topics.delivered}, the rest stay held"
    )
    print("\ndead letters by reason:")
    for reason, n in sorted(reasons.items()):
        print(f"  {reason:20} {n:7}")
    print(f"\nmetrics (http://{settings.http.host}:{settings.http.port}/metrics while running):")
    for line in metrics:
        print(f"  {line}")
    print(
        f"\ntopics: {t.delivered} (released), {t.holds} (held until approved), "
        f"{t.review_tasks} (for reviewers), {t.audit} (audit trail), {t.deadletter} (invalid, "
        "with reason headers)."
    )
    url = f"http://{settings.http.host}:{settings.http.port}/workspace/"
    print(
        f"\nreviewer workspace: {url}\n  sign in with the token {person}\n"
        "  (reviewer demo-reviewer: every pool, and an operator; the held items above wait there)"
    )
    if serve:
        print("  serving until Ctrl-C", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await gateway_task
    else:
        print(
            f"  the gateway stops now; to serve it again: HITL_REVIEW__REVIEWERS_FILE={reviewers}"
            f" HITL_DECISIONS__KEYS_FILE={keys} HITL_DECISIONS__GATEWAY_KEY_ID=demo-gateway"
            " .venv/bin/hitl-gateway run"
        )
        gateway.request_stop()
        await gateway_task
    return 0 if accounted == count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="records per second (0: max)")
    parser.add_argument("--invalid-share", type=float, default=0.03)
    parser.add_argument(
        "--serve", action=argparse.BooleanOptionalAction, default=sys.stdin.isatty(),
        help="keep serving the workspace until Ctrl-C (default: when run from a terminal)",
    )  # fmt: skip
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.count, args.rate, args.invalid_share, args.serve)))
