"""The bare-client baseline: an aiokafka consume -> produce passthrough with the gateway's
batching (A), or with transactions committed per batch like the gateway (A-tx). Like the
gateway, it builds one record batch per partition (``create_batch`` / ``send_batch``);
``--per-record`` uses ``send()`` for each record instead.

``--plan`` (mode A-eq, loadtest/equal_work.py) makes it do the gateway's I/O without its
work: per input, the records the gateway writes for the same mix (topics, value and header
sizes; the input's own bytes where the gateway forwards them), to ``--output`` + the topic's
setting name, and per held record the hold index's writes to Redis (pipelined, after the
commit, as the gateway indexes after its commit).

    .venv/bin/python loadtest/passthrough.py --input IN --output OUT --group G [--transactional]

Forwards every record's value, key, headers and timestamp untouched. Exits after
``--exit-after`` records (or on SIGTERM). Used by loadtest/bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import aiokafka.producer.sender as aiokafka_sender
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4_194_304,
        fetch_max_bytes=52_428_800,
    )
    aiokafka_sender.BACKOFF_OVERRIDE = args.txn_backoff_ms / 1000
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        linger_ms=args.linger_ms,
        transactional_id=f"{args.group}-tx" if args.transactional else None,
        enable_idempotence=True,
        max_request_size=2_162_688,
        max_batch_size=524_288,
    )
    equal = (
        EqualWork(args.plan, args.output, args.redis_url, args.redis_prefix) if args.plan else None
    )
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while not stop.is_set() and (args.exit_after is None or done < args.exit_after):
            batch = await consumer.getmany(timeout_ms=200, max_records=args.max_batch)
            if not batch:
                continue
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            if args.transactional:
                await producer.begin_transaction()
            futures: list[Any] = []
            for tp, records in batch.items():
                if equal is not None:
                    futures += await equal.send(producer, tp.partition, records)
                    continue
                futures += await _send(producer, args.output, tp.partition, records,
                                       per_record=args.per_record)  # fmt: skip
            if args.transactional:  # as the gateway does: offsets join while records fly
                futures.append(producer.send_offsets_to_transaction(offsets, args.group))
            await asyncio.gather(*futures)
            if args.transactional:
                await producer.commit_transaction()
            else:
                await consumer.commit(offsets)
            if equal is not None:
                await equal.index()
            done += sum(len(r) for r in batch.values())
    finally:
        if equal is not None:
            await equal.redis.aclose()
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _send(
    producer: AIOKafkaProducer,
    output: str,
    partition: int,
    records: list[Any],
    *,
    per_record: bool,
) -> list[Any]:
    """One partition's records, as the gateway sends them: record batches built here and
    closed before sending (drained at once, not after linger_ms); or send() per record."""
    if per_record:
        return [await producer.send(output, r.value, key=r.key, headers=list(r.headers or ()),
                                    timestamp_ms=r.timestamp) for r in records]  # fmt: skip
    futures: list[Any] = []
    built = producer.create_batch()
    for r in records:
        fields = {"key": r.key, "value": r.value, "timestamp": r.timestamp,
                  "headers": list(r.headers or ())}  # fmt: skip
        if built.append(**fields) is None:
            built.close()
            futures.append(await producer.send_batch(built, output, partition=partition))
            built = producer.create_batch()
            built.append(**fields)
    built.close()
    futures.append(await producer.send_batch(built, output, partition=partition))
    return futures


class EqualWork:
    """The gateway's output records and index writes per input, without its work."""

    def __init__(self, plan_file: Path, prefix: str, redis_url: str, key_prefix: str) -> None:
        plan = orjson.loads(plan_file.read_bytes())
        fill: dict[int, bytes] = {}

        def filler(size: int) -> bytes:
            return fill.setdefault(size, b"x" * size)

        # Per sampled input: (topic, forwarded?, value, headers, hold metadata or None).
        self.plan = [
            [(prefix + o["kind"], o["kind"] in ("delivered", "holds"), filler(o["value"]),
              [(k, filler(n)) for k, n in o["headers"]], filler(o["hold"]) if o["hold"] else None)
             for o in outputs]
            for outputs in plan
        ]  # fmt: skip
        self.n = 0
        self.redis = aioredis.Redis.from_url(redis_url)
        self.pipe = self.redis.pipeline(transaction=False)
        self.holds = 0
        self.k = key_prefix

    async def send(
        self, producer: AIOKafkaProducer, partition: int, records: list[Any]
    ) -> list[Any]:
        built: dict[str, Any] = {}
        futures: list[Any] = []
        for r in records:
            shapes = self.plan[self.n % len(self.plan)]
            self.n += 1
            for topic, forwarded, value, headers, hold in shapes:
                fields = {"key": r.key, "value": r.value if forwarded else value,
                          "timestamp": r.timestamp, "headers": headers}  # fmt: skip
                batch = built.get(topic)
                if batch is None:
                    batch = built[topic] = producer.create_batch()
                if batch.append(**fields) is None:
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = built[topic] = producer.create_batch()
                    batch.append(**fields)
                if hold is not None:
                    self._index(r, hold)
        for topic, batch in built.items():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _index(self, r: Any, meta: bytes) -> None:
        """A held record's index writes, as the gateway's hold index makes them."""
        k = self.k
        item = f"{r.partition}:{r.offset}"
        p, at = self.pipe, r.timestamp
        p.hset(f"{k}hold:{item}", mapping={"meta": meta, "value": r.value})
        for queue in ("queue", "age", "dqueue", "dage"):
            p.zadd(f"{k}{queue}:pool", {item: at})
        p.sadd(f"{k}domain:d", item)
        p.sadd(f"{k}pools", "pool")
        p.zadd(f"{k}sla:{r.partition}", {item: at})
        p.delete(f"{k}closed:{item}")
        p.set(f"{k}id:{item}", meta[:64], nx=True)
        self.holds += 1

    async def index(self) -> None:
        if self.holds:
            await self.pipe.execute()
            self.holds = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional", action="store_true")
    parser.add_argument("--max-batch", type=int, default=1_000)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--txn-backoff-ms", type=float, default=2.0,
                        help="retry pause after CONCURRENT_TRANSACTIONS (aiokafka: a fixed "
                             "20 ms); the gateway's default, for a like-for-like A-tx")  # fmt: skip
    parser.add_argument("--exit-after", type=int, default=None)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--per-record", action="store_true",
                        help="send() per record instead of building record batches")  # fmt: skip
    parser.add_argument("--plan", type=Path, default=None,
                        help="equal work (A-eq): the gateway's outputs per input, from "
                        "loadtest/equal_work.py; --output is then the topics' prefix")  # fmt: skip
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default="passthrough:")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop  # noqa: PLC0415 - optional

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
