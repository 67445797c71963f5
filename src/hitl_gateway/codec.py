"""Stage 1: raw Kafka value bytes -> a validated ``InputRecord``, or an ``Invalid`` verdict.

Never raises for bad data: every input is classified, so the stream cannot be stopped by it.

The contract is strict JSON (RFC 8259), decided here and nowhere else: the bytes are parsed
by orjson, the same parser every later reader uses (review tasks, the review API, the
decision applier), so whatever routes can be read back. ``NaN``, ``Infinity`` and numbers
beyond a double's range are not JSON; nesting is bounded (``MAX_DEPTH``) below what the
writers of derived records accept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from hitl_gateway.models import DeadLetterReason, InputRecord, Invalid

# The model's own validator, called directly on the parsed object (the wrappers cost a
# measurable share of a 1 KB record).
_validate: Callable[[Any], InputRecord] = InputRecord.__pydantic_validator__.validate_python

# Deepest nesting a record may have: the task and API views nest it one level further, and
# orjson and pydantic refuse to write more than 254 levels.
MAX_DEPTH = 128

_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "float_type",
        "int_type",
        "bool_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "datetime_type",
        "none_required",
    }
)
_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "string_too_long",
        "string_too_short",
    }
)


def decode(value: bytes | None, *, max_bytes: int, max_id_length: int) -> InputRecord | Invalid:
    """Classify one record value. Only the size check runs before parsing."""
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
    # The walk runs only for records that might be too deep.
    if _brackets_exceed(value, MAX_DEPTH) and depth(parsed) > MAX_DEPTH:
        return Invalid(DeadLetterReason.TOO_DEEP, f"record nests deeper than {MAX_DEPTH} levels")
    try:
        record = _validate(parsed)
    except ValidationError as exc:
        return _classify_validation(exc)
    if len(record.id) > max_id_length:
        message = f"id is {len(record.id)} characters, limit {max_id_length}"
        return Invalid(DeadLetterReason.OUT_OF_RANGE, message)
    return record


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` and ``[]`` are 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in node)
    return deepest


def _brackets_exceed(value: bytes, limit: int) -> bool:
    """Whether ``value`` holds more than ``limit`` opening brackets, as a record nesting
    deeper than ``limit`` does (those in strings count too: a necessary condition only).

    ``bytes.find`` skips to the next bracket with memchr and the scan stops past ``limit``;
    ``bytes.count`` looks at every byte, which for a 1 KB record took about as long as
    orjson's whole parse of it. A record with more brackets makes up to ``limit + 1`` calls,
    before a walk that costs more."""
    found = 0
    for bracket in (b"[", b"{"):
        at = value.find(bracket)
        while at != -1:
            found += 1
            if found > limit:
                return True
            at = value.find(bracket, at + 1)
    return False


def read_json(value: bytes) -> Any:
    """A stored record (a hold's bytes) as Python data, for every reader after routing.

    Records routed since the strict contract always parse with orjson. Holds written by
    earlier versions may carry ``NaN``, ``Infinity`` or ``1e400``, which orjson rejects: they
    are read with the standard library, and those numbers become ``null`` when written again
    (orjson and pydantic write non-finite floats as ``null``), so no reader fails on them.
    """
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value, parse_constant=lambda _: None)


def _classify_undecodable(value: bytes, exc: orjson.JSONDecodeError) -> Invalid:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as utf_exc:
        return Invalid(
            DeadLetterReason.NOT_UTF8, f"record is not valid UTF-8 at byte {utf_exc.start}"
        )
    # Failure path only: the stdlib parser accepts NaN/Infinity (as Python producers emit
    # them), so a NaN confidence is reported as the out-of-range field it is.
    try:
        lenient: Any = json.loads(text)
    except (ValueError, RecursionError):
        return Invalid(DeadLetterReason.NOT_JSON, f"record is not valid JSON: {exc}")
    if isinstance(lenient, dict):
        try:
            InputRecord.model_validate(lenient)
        except ValidationError as validation:
            return _classify_validation(validation)
    return Invalid(
        DeadLetterReason.NOT_JSON,
        f"record is not strict JSON (NaN, Infinity and numbers beyond a double's range are not"
        f" JSON): {exc}",
    )


def _classify_validation(exc: ValidationError) -> Invalid:
    first = exc.errors(include_url=False, include_input=False)[0]
    path = ".".join(str(part) for part in first["loc"]) or "<record>"
    kind = first["type"]
    if kind == "missing":
        reason = DeadLetterReason.MISSING_FIELD
    elif kind in _TYPE_ERRORS:
        reason = DeadLetterReason.WRONG_TYPE
    elif kind in _RANGE_ERRORS:
        reason = DeadLetterReason.OUT_OF_RANGE
    else:
        reason = DeadLetterReason.INVALID_FIELD
    extra = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return Invalid(reason, f"field '{path}': {first['msg']}{extra}")
