"""Load generator: realistic model outputs into the input topic, and a reviewer side.

    # a pre-loaded backlog of 200,000 records of 1 KB, 3% invalid
    .venv/bin/python loadtest/generate.py backlog --count 200000 --payload-bytes 1024 \\
        --invalid-share 0.03
    # a fixed offered rate: 5,000 records a second for a minute, mixed payload sizes
    .venv/bin/python loadtest/generate.py rate --rate 5000 --duration 60 \\
        --payload-bytes 256,1024,4096,16384
    # the reviewer side: decide review tasks at 20 a second so holds drain
    .venv/bin/python loadtest/generate.py review --rate 20 --reviewer load-a --reviewer load-b

Records follow loadtest/records.py: ten domains (mandatory review, confidence cascades,
sampled calibration, plain traffic), confidence and language distributions, judge grades,
payloads of the chosen sizes, and a share of malformed records (each dead-letter reason).
Progress goes to stderr once a second. The reviewer side reads ``hitl.review.tasks`` and
publishes decisions to ``hitl.review.decisions`` as the listed reviewers (they must be in the
gateway's reviewers file with the pools they review, ``pools: ["*"]`` for all).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownTopicOrPartitionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import GeneratedRecord, make_stream

PAYLOAD_SIZES = (256, 1_024, 4_096, 16_384)
_CHUNK = 5_000


@dataclass
class Progress:
    """Prints ``label: n records (rate/s)`` to stderr at most once a second."""

    label: str
    quiet: bool = False
    count: int = 0
    started: float = 0.0
    _last: float = 0.0

    def __post_init__(self) -> None:
        self.started = self._last = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if not self.quiet and now - self._last >= 1.0:
            self._last = now
            rate = self.count / max(now - self.started, 1e-9)
            print(f"{self.label}: {self.count:,} records ({rate:,.0f}/s)", file=sys.stderr)

    def done(self) -> float:
        elapsed = time.monotonic() - self.started
        if not self.quiet:
            rate = self.count / max(elapsed, 1e-9)
            print(f"{self.label}: {self.count:,} records in {elapsed:.1f} s ({rate:,.0f}/s)",
                  file=sys.stderr)  # fmt: skip
        return elapsed


def records(
    count: int,
    *,
    sizes: tuple[int, ...],
    invalid_share: float,
    seed: int,
    run_id: str,
    domains: tuple[str, ...] | None = None,
) -> Iterator[GeneratedRecord]:
    """``count`` records in chunks, sizes drawn uniformly from ``sizes``."""
    rng = random.Random(seed)
    made = 0
    chunk_no = 0
    while made < count:
        n = min(_CHUNK, count - made)
        size = sizes[0] if len(sizes) == 1 else 0
        if size:
            chunk = make_stream(n, run_id=f"{run_id}-{chunk_no}", seed=seed + chunk_no,
                                payload_bytes=size, invalid_share=invalid_share,
                                domains=domains)  # fmt: skip
        else:
            chunk = []
            for i in range(n):  # mixed sizes: one record at a time
                chunk += make_stream(
                    1,
                    run_id=f"{run_id}-{chunk_no}-{i}",
                    seed=rng.randrange(2**31),
                    payload_bytes=rng.choice(sizes),
                    invalid_share=invalid_share,
                    domains=domains,
                )
        yield from chunk
        made += n
        chunk_no += 1


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` if it does not exist (the local broker does not auto-create)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics(
                [NewTopic(topic, partitions, 1, topic_configs={"max.message.bytes": "2097152"})]
            )
    finally:
        await admin.close()


def producer(bootstrap: str, *, max_bytes: int = 1_048_576) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=max(max_bytes // 4, 16_384),
        max_request_size=max_bytes + 65_536,
        acks="all",
        enable_idempotence=True,
    )


async def backlog(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    sizes: tuple[int, ...] = (1_024,),
    invalid_share: float = 0.0,
    seed: int = 7,
    quiet: bool = False,
    domains: tuple[str, ...] | None = None,
) -> float:
    """Produce ``count`` records as fast as the client can; returns the seconds taken."""
    progress = Progress(f"backlog {topic}", quiet)
    client = producer(bootstrap, max_bytes=max(sizes) * 2)
    await client.start()
    try:
        pending: list[asyncio.Future[object]] = []
        run_id = uuid.uuid4().hex[:8]
        for rec in records(count, sizes=sizes, invalid_share=invalid_share, seed=seed,
                           run_id=run_id, domains=domains):  # fmt: skip
            pending.append(await client.send(topic, rec.value, key=rec.key))
            if len(pending) >= _CHUNK:
                await asyncio.gather(*pending)
                progress.add(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        progress.add(len(pending))
    finally:
        await client.stop()
    return progress.done()


async def offered_rate(
    bootstrap: str,
    topic: str,
    rate: float,
    duration_s: float,
    *,
    sizes: tuple[int, ...] = (1_024,),
    invalid_share: float = 0.0,
    seed: int = 11,
    quiet: bool = False,
) -> int:
    """Produce at ``rate`` records a second for ``duration_s``, paced in 10 ms slices; each
    record's timestamp is its send time. Returns the records sent."""
    progress = Progress(f"rate {rate:,.0f}/s {topic}", quiet)
    client = producer(bootstrap, max_bytes=max(sizes) * 2)
    await client.start()
    total = int(rate * duration_s)
    stream = records(total, sizes=sizes, invalid_share=invalid_share, seed=seed,
                     run_id=uuid.uuid4().hex[:8])  # fmt: skip
    sent = 0
    try:
        start = time.monotonic()
        pending: list[asyncio.Future[object]] = []
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            for rec in (next(stream) for _ in range(due - sent)):
                pending.append(await client.send(topic, rec.value, key=rec.key))
            progress.add(due - sent)
            sent = due
            if len(pending) > _CHUNK:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
    finally:
        await client.stop()
    progress.done()
    return sent


async def review(
    bootstrap: str,
    tasks_topic: str,
    decisions_topic: str,
    reviewers: list[str],
    rate: float,
    *,
    duration_s: float | None = None,
    seed: int = 5,
    quiet: bool = False,
) -> int:
    """Decide review tasks at ``rate`` a second as ``reviewers``: mostly approvals, some edits
    and rejections, a grade on blind tasks; one vote per required reviewer."""
    rng = random.Random(seed)
    progress = Progress("decisions", quiet)
    consumer = AIOKafkaConsumer(
        tasks_topic,
        bootstrap_servers=bootstrap,
        group_id=f"loadtest-reviewers-{uuid.uuid4().hex[:6]}",
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    client = producer(bootstrap)
    await consumer.start()
    await client.start()
    decided = 0
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while deadline is None or time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=100)
            for task in (orjson.loads(r.value) for rs in batch.values() for r in rs):
                for who in rng.sample(reviewers, min(len(reviewers), task.get("reviewers") or 1)):
                    verdict = rng.choices(["approve", "edit", "reject"], [0.85, 0.1, 0.05])[0]
                    decision = {
                        "decision_id": uuid.uuid4().hex,
                        "item_id": task["item_id"],
                        "reviewer": who,
                        "verdict": verdict,
                        "content_hash": task["content_hash"],
                        "edited_output": {"text": "edited"} if verdict == "edit" else None,
                        "reason": "load test" if verdict == "reject" else None,
                        "grade": rng.choice("ABCD") if task.get("blind") else None,
                    }
                    key = task["item_id"].encode()
                    await client.send_and_wait(decisions_topic, orjson.dumps(decision), key=key)
                    decided += 1
                    progress.add(1)
                    await asyncio.sleep(1 / rate)
    finally:
        await consumer.stop()
        await client.stop()
    progress.done()
    return decided


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of byte sizes") from None
    if not sizes or any(s < 200 or s > 1_000_000 for s in sizes):
        raise argparse.ArgumentTypeError("payload sizes must be between 200 and 1,000,000 bytes")
    return sizes


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", default="127.0.0.1:9092")
    common.add_argument("--topic", default="hitl.outputs")
    mix = ",".join(map(str, PAYLOAD_SIZES))
    common.add_argument("--payload-bytes", type=_sizes, default=(1_024,),
                        help=f"one size, or a comma list to mix, e.g. {mix}")  # fmt: skip
    common.add_argument("--invalid-share", type=float, default=0.0)
    common.add_argument("--seed", type=int, default=7)
    common.add_argument("--domains", type=lambda t: tuple(t.split(",")), default=None,
                        help="only these domains of the mix (comma list)")  # fmt: skip
    common.add_argument("--partitions", type=int, default=None,
                        help="create --topic with N partitions if missing")  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("backlog", parents=[common], help="pre-load N records as fast as possible")
    b.add_argument("--count", type=int, required=True)
    r = sub.add_parser("rate", parents=[common], help="produce at a fixed offered rate")
    r.add_argument("--rate", type=float, required=True, help="records per second")
    r.add_argument("--duration", type=float, required=True, help="seconds")
    v = sub.add_parser("review", parents=[common], help="decide review tasks at a rate")
    v.add_argument("--rate", type=float, default=10.0, help="decisions per second")
    v.add_argument("--reviewer", action="append", required=True, help="reviewer id (repeat)")
    v.add_argument("--tasks-topic", default="hitl.review.tasks")
    v.add_argument("--decisions-topic", default="hitl.review.decisions")
    v.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    args = parser.parse_args()
    if not 0.0 <= args.invalid_share <= 1.0:
        parser.error("--invalid-share must be between 0 and 1")
    try:
        asyncio.run(_run(args))
    except UnknownTopicOrPartitionError:
        sys.exit(f"generate.py: topic '{args.topic}' does not exist: create it "
                 "(hitl-gateway topics ensure) or pass --partitions N")  # fmt: skip


async def _run(args: argparse.Namespace) -> None:
    if args.partitions:
        await create_topic(args.bootstrap, args.topic, args.partitions)
    if args.mode == "backlog":
        await backlog(args.bootstrap, args.topic, args.count, sizes=args.payload_bytes,
                      invalid_share=args.invalid_share, seed=args.seed,
                      domains=args.domains)  # fmt: skip
    elif args.mode == "rate":
        await offered_rate(args.bootstrap, args.topic, args.rate, args.duration,
                           sizes=args.payload_bytes, invalid_share=args.invalid_share,
                           seed=args.seed)  # fmt: skip
    else:
        await review(args.bootstrap, args.tasks_topic, args.decisions_topic, args.reviewer,
                     args.rate, duration_s=args.duration, seed=args.seed)  # fmt: skip


if __name__ == "__main__":
    main()
