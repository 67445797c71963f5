"""What the tolerant record path (src/hitl_gateway/poison.py) costs a record that needs none of
it: a fetched partition of 1,000-record batches (about 1 KB values, two headers), parsed
batch by batch (the parser alone), and turned into consumer records by aiokafka's own
per-partition iterator (what ``getmany`` does), with aiokafka's ``MemoryRecords`` and with
``TolerantRecords``; then routing's per-record check (``poisoned``).

    .venv/bin/python loadtest/poison_overhead.py [--batches 10] [--repeat 15]
    .venv/bin/python loadtest/poison_overhead.py --instructions

The first form prints nanoseconds per record, best of ``--repeat``; on a shared machine those
move by tens of nanoseconds from run to run. ``--instructions`` counts instructions per record
under valgrind instead (a pass minus a run that only builds the batches), which repeat.
Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import timeit
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from hitl_gateway import poison

RECORDS_PER_BATCH = 1_000
TP = TopicPartition("outputs", 0)


def fetched(batches: int) -> bytes:
    """A fetch response's record set: ``batches`` batches one after another."""
    out = b""
    for n in range(batches):
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=0,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 30,
        )
        for i in range(RECORDS_PER_BATCH):
            value = b'{"id": "%d", "domain": "support-chat", "output": "%s"}' % (i, b"x" * 950)
            headers = [("traceparent", b"00-" + b"a" * 50), ("service", b"chat")]
            builder.append(i, timestamp=None, key=b"key-%d" % i, value=value, headers=headers)
        batch = bytearray(builder.build())
        batch[0:8] = (n * RECORDS_PER_BATCH).to_bytes(8, "big")  # base offset, outside the CRC
        out += bytes(batch)
    return out


def consume(records_class: Any, partition_class: Any, data: bytes) -> list[Any]:
    return list(partition_class(TP, records_class(data), [], 0, None, None, True, 0))


def parse(records_class: Any, data: bytes) -> None:
    records = records_class(data)
    while records.has_next():
        for _ in records.next_batch():
            pass


PATHS: dict[str, Any] = {
    "aiokafka": lambda data: consume(MemoryRecords, PartitionRecords, data),
    "tolerant": lambda data: consume(poison.TolerantRecords, poison._Partition, data),
    "none": lambda data: None,
}


def instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    counts = {}
    for path in PATHS:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                __file__, "--batches", str(args.batches), "--one-pass", path]  # fmt: skip
        run = subprocess.run(argv, capture_output=True, text=True, check=False,
                             env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            sys.exit(f"valgrind run failed ({run.returncode}): {run.stderr[-2000:]}")
        counts[path] = int(found.group(1))
    n = args.batches * RECORDS_PER_BATCH
    plain, tolerant = ((counts[p] - counts["none"]) / n for p in ("aiokafka", "tolerant"))
    extra = tolerant - plain
    print(f"consumer records  aiokafka {plain:7,.0f} instructions/record, tolerant"
          f" {tolerant:7,.0f} ({extra:+,.0f}, {extra / plain:+.1%})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--one-pass", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        instructions(args)
        return
    data = fetched(args.batches)
    if args.one_pass:
        PATHS[args.one_pass](data)
        return
    n = args.batches * RECORDS_PER_BATCH

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=1, repeat=args.repeat)) / n * 1e9

    for name, plain_fn, tolerant_fn in [
        (
            "parse batches",
            lambda: parse(MemoryRecords, data),
            lambda: parse(poison.TolerantRecords, data),
        ),
        (
            "consumer records",
            lambda: consume(MemoryRecords, PartitionRecords, data),
            lambda: consume(poison.TolerantRecords, poison._Partition, data),
        ),
    ]:
        plain, tolerant = best(plain_fn), best(tolerant_fn)
        print(f"{name:17} aiokafka {plain:7.1f} ns/record, tolerant {tolerant:7.1f}"
              f" ({tolerant - plain:+.1f}, {(tolerant - plain) / plain:+.1%})")  # fmt: skip
    records = consume(MemoryRecords, PartitionRecords, data)
    check = best(lambda: [poison.poisoned(r) for r in records])
    print(f"routing's poisoned() check: {check:.1f} ns/record")


if __name__ == "__main__":
    main()
