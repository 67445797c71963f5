"""Decode alone, microseconds per record on the generated mix: today's ``codec.decode`` and its
parts, against validating the routing fields with msgspec and building the same
``InputRecord`` from its result.

    .venv/bin/python loadtest/decode_bench.py [--records 2000] [--passes 7]

The variants run in alternating passes over the same records; each figure is the best pass
(the least disturbed by other work on the machine). The msgspec variant needs msgspec
(``pip install -e '.[bench]'``); it is checked against pydantic's validator on every record
before it is timed, so it is compared at equal output: the same field values and types, the
same ``created_at`` objects (pydantic's own datetime parsing, whose formats and time zone
type msgspec does not share), and the same set fields.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hitl_gateway.codec import decode
from hitl_gateway.models import InputRecord, Judge
from records import make_stream

LIMITS = {"max_bytes": 1_000_000, "max_id_length": 512}


LANGUAGE = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*\Z"


class RoutingJudge(msgspec.Struct):
    score: float | None = None
    grade: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    model: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class RoutingFields(msgspec.Struct):
    """``InputRecord``'s contract without ``created_at``. ``\\Z``: pydantic's pattern engine
    does not let ``$`` match before a final newline, Python's does."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=4_096)]
    domain: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    language: Annotated[str, msgspec.Meta(pattern=LANGUAGE, max_length=64)] | None = None
    model: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    judge: RoutingJudge | None = None
    metadata: dict[str, str] | None = None


_RECORD_FIELDS = frozenset(InputRecord.model_fields)
_JUDGE_FIELDS = frozenset(Judge.model_fields)
_created_at = TypeAdapter(datetime | None).validate_python
_new = object.__new__
_set = object.__setattr__


def _model(cls: type[Any], values: dict[str, Any], fields_set: set[str]) -> Any:
    # What model_construct does, without its per-field loop (which costs more than
    # pydantic's whole validator here).
    made = _new(cls)
    _set(made, "__dict__", values)
    _set(made, "__pydantic_fields_set__", fields_set)
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_private__", None)
    return made


def msgspec_record(parsed: dict[str, Any]) -> InputRecord:
    fields = msgspec.convert(parsed, RoutingFields)
    judge = None
    if fields.judge is not None:
        j = fields.judge
        judge = _model(Judge, {"score": j.score, "grade": j.grade, "model": j.model},
                       parsed["judge"].keys() & _JUDGE_FIELDS)  # fmt: skip
    values = {
        "id": fields.id,
        "domain": fields.domain,
        "confidence": fields.confidence,
        "language": fields.language,
        "model": fields.model,
        "judge": judge,
        "metadata": fields.metadata,
        "created_at": _created_at(parsed.get("created_at")),
    }
    record: InputRecord = _model(InputRecord, values, parsed.keys() & _RECORD_FIELDS)
    return record


def _same(a: InputRecord, b: InputRecord) -> bool:
    def view(r: InputRecord) -> tuple[Any, ...]:
        judge = r.judge and (r.judge.__dict__, r.judge.model_fields_set)
        types = [type(v) for v in r.__dict__.values()]
        return r.__dict__, r.model_fields_set, judge, types, repr(r.created_at)

    return view(a) == view(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000)
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()
    values = [g.value for g in make_stream(args.records, run_id="decode", seed=3)]
    parsed = [orjson.loads(v) for v in values if v is not None]
    validate = InputRecord.__pydantic_validator__.validate_python
    for p in parsed:
        if not _same(msgspec_record(p), validate(p)):
            sys.exit(f"the msgspec variant builds another record from {p!r}")

    variants: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
        "decode (orjson parse + pydantic validator, as shipped)": (
            lambda v: decode(v, **LIMITS),
            values,
        ),
        "orjson parse alone": (orjson.loads, values),
        "pydantic validator alone (parsed dict -> InputRecord)": (validate, parsed),
        "msgspec.convert alone (parsed dict -> struct)": (
            lambda p: msgspec.convert(p, RoutingFields),
            parsed,
        ),
        "msgspec variant (parsed dict -> the same InputRecord)": (msgspec_record, parsed),
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.passes):
        for name, (run, inputs) in variants.items():
            start = time.perf_counter()
            for item in inputs:
                run(item)
            best[name] = min(best[name], (time.perf_counter() - start) / len(inputs))
    for name, seconds in best.items():
        print(f"{seconds * 1e6:6.2f} us/record  {name}")


if __name__ == "__main__":
    main()
