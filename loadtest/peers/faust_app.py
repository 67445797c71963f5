"""Peer F: the gateway's job as a faust-streaming application (aiokafka underneath), written
as its documentation shows: one agent on the input topic, exactly-once processing (one
transactional producer per input partition), each record's outputs sent to their topics.

    .venv/bin/python loadtest/peers/faust_app.py --bootstrap B --input IN --group G \
        --output-prefix bench.RUN. [--commit-interval-ms MS]

Faust's own commit interval (2.8 s) unless ``--commit-interval-ms`` is given.

Used by loadtest/bench.py (mode F); needs the bench extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import faust  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from job import KINDS, Consumed, Job


def build(args: argparse.Namespace) -> faust.App:
    # Faust's own commit interval unless one is given.
    commit = {} if args.commit_interval_ms is None else {
        "broker_commit_interval": args.commit_interval_ms / 1000
    }  # fmt: skip
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        processing_guarantee="exactly_once",
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-data-"),
        web_enabled=False,
        **commit,
    )
    source = app.topic(args.input, key_type=bytes, value_type=bytes)
    names = {kind: f"{args.output_prefix}{kind}" for kind in KINDS}
    outputs = {name: app.topic(name, key_type=bytes, value_type=bytes) for name in names.values()}
    job = Job(names)

    @app.agent(source)  # type: ignore[misc]
    async def route(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            record = Consumed(m.topic, m.partition, m.offset, int(m.timestamp * 1000), m.key,
                              m.value, list(m.headers or ()))  # fmt: skip
            for o in job.route(record):
                await outputs[o.topic].send(key=o.key, value=o.value, headers=o.headers)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--commit-interval-ms", type=int, default=None)
    parser.add_argument("--log-level", default="warn")
    args = parser.parse_args()
    app = build(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel", args.log_level]
    app.main()


if __name__ == "__main__":
    main()
