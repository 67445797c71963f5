"""``decode`` against the decode it replaced, on records around the contract: the cheaper
bracket scan before the depth walk must classify every record exactly as counting did."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hitl_gateway.codec import (
    MAX_DEPTH,
    _brackets_exceed,
    _classify_undecodable,
    _classify_validation,
    _validate,
    decode,
    depth,
)
from hitl_gateway.models import DeadLetterReason, InputRecord, Invalid

LIMITS = {"max_bytes": 20_000, "max_id_length": 64}


def reference_decode(
    value: bytes | None, *, max_bytes: int, max_id_length: int
) -> InputRecord | Invalid:
    """``codec.decode`` as it was before the bracket scan: both counts over every byte."""
    if value is None:
        return Invalid(DeadLetterReason.NULL_VALUE, "record value is null (a tombstone)")
    if len(value) > max_bytes:
        return Invalid(
            DeadLetterReason.TOO_LARGE, f"record value is {len(value)} bytes, limit {max_bytes}"
        )
    try:
        parsed: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _classify_undecodable(value, exc)
    if not isinstance(parsed, dict):
        return Invalid(
            DeadLetterReason.NOT_OBJECT, f"record is a JSON {type(parsed).__name__}, not an object"
        )
    if value.count(b"[") + value.count(b"{") > MAX_DEPTH and depth(parsed) > MAX_DEPTH:
        return Invalid(DeadLetterReason.TOO_DEEP, f"record nests deeper than {MAX_DEPTH} levels")
    try:
        record = _validate(parsed)
    except ValidationError as exc:
        return _classify_validation(exc)
    if len(record.id) > max_id_length:
        message = f"id is {len(record.id)} characters, limit {max_id_length}"
        return Invalid(DeadLetterReason.OUT_OF_RANGE, message)
    return record


def _nest(levels: list[bool], leaf: Any) -> Any:
    """``leaf`` inside one container per level, outermost first: a list (True) or an object."""
    for is_list in reversed(levels):
        leaf = [leaf] if is_list else {"k": leaf}
    return leaf


_strings = st.text(max_size=12) | st.sampled_from(["", "a" * 64, "a" * 65, "é" * 64, "[{", "\n"])
_numbers = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=0.0, max_value=1.0)
    | st.sampled_from([0, 1, 0.0, 1.0, -0.0, 1.0000001, -1e-300])
)
_any_scalar = st.none() | st.booleans() | _numbers | _strings
_created_at = st.sampled_from(
    [
        "2026-11-24T12:00:00Z",
        "2026-11-24T12:00:00+02:00",
        "2026-11-24t12:00:00z",
        "2026-11-24 12:00",
        "2026-11-24",
        "2026-11-24T12:00:00.1234567Z",
        "2026-11-24T23:59:60Z",
        "1700000000",
        "yesterday",
    ]
) | st.integers(min_value=-(10**12), max_value=10**12)
_languages = st.sampled_from(
    ["en", "pt-BR", "zh-Hant-TW", "en\n", "e", "abcdefghi", "en-", "a" * 65]
)
_valid = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=64), "domain": st.text(min_size=1, max_size=16)},
    optional={
        "confidence": st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0, 1]),
        "language": st.sampled_from(["en", "pt-BR", "zh-Hant-TW"]),
        "model": st.text(max_size=12),
        "judge": st.fixed_dictionaries(
            {},
            optional={
                "score": st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 9),
                "grade": st.text(max_size=3),
                "model": st.text(max_size=8),
            },
        ),
        "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        "created_at": st.sampled_from(["2026-11-24T12:00:00Z", "2026-11-24", "1700000000"]),
        "output": st.text(max_size=20),
    },
)
# Each field valid, wrong, missing or null; unknown fields beside them.
_around = st.fixed_dictionaries(
    {},
    optional={
        "id": _strings | _any_scalar,
        "domain": _strings | _any_scalar,
        "confidence": _numbers | _any_scalar,
        "language": _languages | _any_scalar,
        "model": _strings | _any_scalar,
        "judge": st.none()
        | st.fixed_dictionaries(
            {}, optional={"score": _any_scalar, "grade": _any_scalar, "model": _any_scalar}
        )
        | _any_scalar,
        "metadata": st.none() | st.dictionaries(_strings, _strings | _any_scalar, max_size=3),
        "created_at": _created_at | _any_scalar,
        "extra": _any_scalar,
    },
)
_contract = _valid | _around
# Around the depth limit: the nesting, containers side by side (brackets without depth), and
# brackets inside strings (counted by both scans, no depth at all).
_outputs = st.builds(
    lambda levels, wide, quoted: {"deep": _nest(levels, 1), "wide": wide, "quoted": quoted},
    st.lists(st.booleans(), min_size=MAX_DEPTH - 8, max_size=MAX_DEPTH + 4),
    st.lists(st.sampled_from([[], {}, [[]], {"a": {}}]), max_size=MAX_DEPTH + 8),
    st.text(alphabet="[{}]x", max_size=2 * MAX_DEPTH),
)


@given(record=_contract, output=st.none() | _outputs)
@example(record={"id": "a", "domain": "d"}, output={"deep": _nest([True] * 126, 1)})
@example(record={"id": "a", "domain": "d"}, output={"deep": _nest([False] * 127, 1)})
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_agrees_with_the_decode_it_replaced(record: dict[str, Any], output: Any) -> None:
    if output is not None:
        record = {**record, "output": output}
    value = orjson.dumps(record)
    new, old = decode(value, **LIMITS), reference_decode(value, **LIMITS)
    assert type(new) is type(old)
    assert new == old
    if isinstance(new, InputRecord) and isinstance(old, InputRecord):
        assert new.model_fields_set == old.model_fields_set


@given(
    st.binary(max_size=300) | st.text(alphabet='[{}]x"', max_size=400).map(str.encode),
    st.integers(min_value=0, max_value=MAX_DEPTH + 2),
)
@example(b"[" * MAX_DEPTH, MAX_DEPTH)
@example(b"[" * (MAX_DEPTH + 1), MAX_DEPTH)
@example(b"{" * 100 + b"[" * 29, MAX_DEPTH)
def test_the_bracket_scan_is_the_count(value: bytes, limit: int) -> None:
    assert _brackets_exceed(value, limit) == (value.count(b"[") + value.count(b"{") > limit)


def test_the_boundary_records_are_classified_as_before() -> None:
    at_limit = orjson.dumps({"id": "a", "domain": "d", "output": _nest([True] * 127, 1)})
    past_it = orjson.dumps({"id": "a", "domain": "d", "output": _nest([False] * 128, 1)})
    assert isinstance(decode(at_limit, **LIMITS), InputRecord)
    too_deep = decode(past_it, **LIMITS)
    assert isinstance(too_deep, Invalid)
    assert too_deep.reason is DeadLetterReason.TOO_DEEP
