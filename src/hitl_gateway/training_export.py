"""``hitl-gateway training export``: the training topic read back, selected by time and
domain, and written as JSON lines, a Hugging Face ``datasets`` dataset (Parquet and a card)
or an Argilla dataset directory (training_formats.py; docs/training-data.md)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitl_gateway.errors import ConfigError, kafka_errors
from hitl_gateway.recovery import Reader
from hitl_gateway.settings import Settings
from hitl_gateway.training import SCHEMA_VERSION

FORMATS = ("jsonl", "hf", "argilla")

# Every example field, in the order of schema version 2 (training.example).
FIELDS = (
    "type", "schema_version", "item_id", "decision_id", "domain", "rule", "blocking",
    "verdict", "input", "model", "model_version", "language", "created_at", "confidence",
    "uncertainty", "metadata", "original_output", "edited_output", "reject_reason", "rubric",
    "grade", "grades", "notes", "judge", "reviewer_pool", "reviewer", "policy_version",
    "held_at_ms", "decided_at_ms", "stratum", "human_grade",
    "input_ref", "original_output_ref", "edited_output_ref",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Selection:
    since_ms: int | None = None
    until_ms: int | None = None
    domains: frozenset[str] = frozenset()

    def takes(self, example: dict[str, Any]) -> bool:
        at = example.get("decided_at_ms") or 0
        if self.since_ms is not None and at < self.since_ms:
            return False
        if self.until_ms is not None and at >= self.until_ms:
            return False
        return not self.domains or example.get("domain") in self.domains


def add_parser(sub: Any) -> None:
    training = sub.add_parser("training", help="training examples reviewers produced")
    training_sub = training.add_subparsers(dest="training_command", required=True)
    export = training_sub.add_parser(
        "export", help="write the training topic's examples as JSONL, a HF dataset or Argilla's"
    )
    export.add_argument("--out", type=Path, required=True, help="a file (jsonl) or a directory")
    export.add_argument("--format", choices=FORMATS, default="jsonl")
    export.add_argument("--since", type=iso_ms, help="ISO 8601 start, by decision time (incl.)")
    export.add_argument("--until", type=iso_ms, help="ISO 8601 end (exclusive)")
    export.add_argument("--domain", action="append", default=[], help="only this domain (repeat)")
    export.add_argument("--name", default="hitl-corrections", help="the dataset's name")


def iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def normalized(value: bytes | None, timestamp_ms: int) -> dict[str, Any] | None:
    """An example in the current schema: every field present. Version 1 (before the schema
    was versioned) called a disagreement's output ``output``, had no decision time (the
    Kafka timestamp is the decision's) and named the reviewer whatever the policy: that id
    is left out. None for a record that is not an example (not a JSON object)."""
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or "item_id" not in raw:
        return None
    if raw.get("schema_version") is None:
        raw["schema_version"] = 1
        raw.setdefault("original_output", raw.pop("output", None))
        raw.pop("reviewer", None)
        raw.setdefault("decided_at_ms", timestamp_ms)
    return {name: raw.get(name) for name in FIELDS}


async def read_examples(settings: Settings, selection: Selection) -> list[dict[str, Any]]:
    """Every committed example on the training topic that ``selection`` takes, by decision
    time (then item id)."""
    topic = settings.topics.training
    admin = AIOKafkaAdminClient(**settings.kafka.admin_options())
    with kafka_errors(f"describing topic {topic}"):
        await admin.start()
        try:
            (meta,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
    if meta.get("error_code"):
        raise ConfigError(f"topic {topic} cannot be read (error {meta['error_code']})")
    reader = Reader(settings.kafka)
    await reader.start()
    found: list[dict[str, Any]] = []
    try:
        for p in sorted(part["partition"] for part in meta["partitions"]):
            records, _ = await reader.read(TopicPartition(topic, p), None, 600)
            found += _taken(records, selection)
    finally:
        await reader.stop()
    found.sort(key=lambda e: (e["decided_at_ms"] or 0, e["item_id"]))
    return found


def _taken(records: Iterable[Any], selection: Selection) -> Iterator[dict[str, Any]]:
    for record in records:
        example = normalized(record.value, record.timestamp)
        if example is not None and selection.takes(example):
            yield example


async def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from hitl_gateway import training_formats  # noqa: PLC0415 - pyarrow only here
    except ImportError as exc:
        raise ConfigError(
            f"training export needs pyarrow ({exc}): pip install 'hitl-gateway[export]'"
        ) from exc

    selection = Selection(args.since, args.until, frozenset(args.domain))
    examples = await read_examples(settings, selection)
    if args.format == "jsonl":
        count = training_formats.write_jsonl(examples, args.out)
    elif args.format == "hf":
        count = training_formats.write_hf(examples, args.out, name=args.name, selection=selection)
    else:
        rubrics = training_formats.rubric_grades(settings)
        count = training_formats.write_argilla(examples, args.out, name=args.name,
                                               rubrics=rubrics)  # fmt: skip
    print(f"wrote {count} example(s) (schema version {SCHEMA_VERSION}) to {args.out}")
    return 0
