"""Peer Q: the gateway's job as a Quix Streams application (librdkafka underneath), written
as its documentation shows: one StreamingDataFrame, exactly-once processing, the records of
each input expanded and sent to the topic each names.

    .venv/bin/python loadtest/peers/quix_app.py --bootstrap B --input IN --group G \
        --output-prefix bench.RUN. [--commit-interval-ms 20]

Used by loadtest/bench.py (mode Q); needs the bench extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context  # type: ignore[import-untyped]
from quixstreams.models.serializers import Serializer  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from job import KINDS, Consumed, Job

from hitl_gateway.sink import Outgoing


class OutgoingValue(Serializer):  # type: ignore[misc]
    """The value of a record built by the job (already bytes)."""

    def __call__(self, value: Outgoing, ctx: Any) -> bytes | None:
        return value.value


def build(args: argparse.Namespace) -> Application:
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval_ms / 1000,
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    names = {kind: f"{args.output_prefix}{kind}" for kind in KINDS}
    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=OutgoingValue())
        for name in names.values()
    }
    job = Job(names)

    def route(value: bytes | None, key: bytes | None, timestamp: int, headers: Any) -> list[Any]:
        ctx = message_context()
        record = Consumed(ctx.topic, ctx.partition, ctx.offset, timestamp, key, value,
                          list(headers or ()))  # fmt: skip
        return job.route(record)

    sdf = app.dataframe(source)
    sdf = sdf.apply(route, expand=True, metadata=True)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: value.headers)
    sdf.to_topic(lambda value, key, timestamp, headers: outputs[value.topic],
                 key=lambda value: value.key)  # fmt: skip
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--commit-interval-ms", type=int, default=20)
    build(parser.parse_args()).run()


if __name__ == "__main__":
    main()
