"""Strict JSON is decided once, by the codec: whatever it routes, every later reader in the
gateway can read and write again (review tasks, the review API's item view, the decision
applier's edit and training records). Fed JSON-ish bytes with the usual traps: non-finite
numbers, huge exponents, deep nesting, lone surrogates and invalid UTF-8."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl_gateway.codec import MAX_DEPTH, decode, read_json
from hitl_gateway.models import DeadLetterReason, HoldMeta, InputRecord, Invalid
from hitl_gateway.outputs import blind_view, review_task
from hitl_gateway.review.api import ItemView, _view

LIMITS = {"max_bytes": 200_000, "max_id_length": 64}

# Number spellings: valid JSON, and what lenient parsers accept but JSON does not.
_NUMBERS = st.sampled_from(
    [b"0", b"-0", b"1.5", b"1e308", b"1.7976931348623157e308", b"123456789012345678901234567890",
     b"-9223372036854775809", b"5e-324", b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400",
     b"-1e999", b"1" + b"0" * 400 + b".0", b"01", b".5", b"+1", b"1."]
)  # fmt: skip
_STRINGS = st.sampled_from(
    [b'"ok"', b'"\\ud800"', b'"\\udc00x"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"', b'"\xff\xfe"',
     b'"\xc3\x28"', b'"caf\xc3\xa9"', b'"\\u0000"', b'"tab\there"', b'"<script>x</script>"']
)  # fmt: skip
_SCALARS = _NUMBERS | _STRINGS | st.sampled_from([b"true", b"false", b"null"])


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in items) + b"}"


_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3).map(_array)
        | st.lists(st.tuples(_STRINGS, children), max_size=3).map(_object)
    ),
    max_leaves=12,
)


@st.composite
def _nested(draw: st.DrawFn) -> bytes:
    """A scalar wrapped in arrays and objects, around the depth limit."""
    levels = draw(st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 300))
    value = draw(_SCALARS)
    for n in range(levels):
        value = b"[" + value + b"]" if n % 2 else b'{"k":' + value + b"}"
    return value


_RECORDS = st.builds(
    lambda output, confidence, extra: (
        b'{"id":"i-1","domain":"d","confidence":' + confidence + b',"output":' + output + extra
        + b"}"
    ),
    _VALUES | _nested(),
    st.sampled_from([b"0.5", b"NaN", b"1e400", b"1", b"0"]),
    st.sampled_from([b"", b',"judge":{"grade":"A","score":0.5}', b',"x":Infinity']),
)  # fmt: skip


def _read_back(value: bytes) -> None:
    """Every reader of a routed record, as they read it."""
    body = read_json(value)
    blind = blind_view(value)
    assert "judge" not in blind
    meta = {
        "item_id": "i-1", "domain": "d", "pool": "p", "reviewers": 1, "held_at_ms": 1,
        "content_hash": "sha256:" + "0" * 64, "blind": False,
    }  # fmt: skip
    for shown in (meta, {**meta, "blind": True}):
        view = _view(HoldMeta.of(shown), value)
        assert isinstance(view, ItemView)
        orjson.loads(view.model_dump_json())  # the API's response body
    task = review_task("t", HoldMeta.of(meta), value, rule="r", reasons=[], created_at_ms=1)
    assert task.value is not None
    assert orjson.loads(task.value)["record"] == orjson.loads(orjson.dumps(body))  # as parsed
    # The applier: an edited release and a training record carrying the original output.
    orjson.loads(orjson.dumps({**body, "output": {"edited": body.get("output")}}))
    orjson.loads(orjson.dumps({"original_output": body.get("output"), "judge": body.get("judge")}))


@given(_RECORDS | st.binary(max_size=300))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_input_routes_or_dead_letters_and_routed_ones_read_back(value: bytes) -> None:
    result = decode(value, **LIMITS)
    assert isinstance(result, InputRecord | Invalid)
    if isinstance(result, Invalid):
        assert result.message
        return
    orjson.loads(value)  # strict JSON: the contract every consumer downstream relies on
    _read_back(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"id":"a","domain":"d","output":{"score":NaN}}', DeadLetterReason.NOT_JSON),
        (b'{"id":"a","domain":"d","output":{"score":-Infinity}}', DeadLetterReason.NOT_JSON),
        (b'{"id":"a","domain":"d","output":{"lab":1e400}}', DeadLetterReason.NOT_JSON),
        (b'{"id":"a","domain":"d","confidence":1e400}', DeadLetterReason.OUT_OF_RANGE),
        (b'{"id":"a","domain":"d","output":"\\ud800"}', DeadLetterReason.NOT_JSON),
        (
            b'{"id":"a","domain":"d","output":' + b"[" * 200 + b"]" * 200 + b"}",
            DeadLetterReason.TOO_DEEP,
        ),
    ],
)
def test_what_is_not_strict_json_is_dead_lettered(value: bytes, reason: DeadLetterReason) -> None:
    result = decode(value, **LIMITS)
    assert isinstance(result, Invalid)
    assert result.reason is reason, result.message


def test_nesting_up_to_the_limit_routes() -> None:
    inner = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    value = b'{"id":"a","domain":"d","output":' + inner + b"}"
    assert isinstance(decode(value, **LIMITS), InputRecord)
    _read_back(value)


def test_holds_written_before_the_strict_contract_are_still_readable() -> None:
    # A hold that an earlier version routed: its non-finite numbers read back as null.
    old = b'{"id":"a","domain":"d","output":{"score":NaN,"lab":1e400,"x":-Infinity}}'
    assert read_json(old)["output"] == {"score": None, "lab": float("inf"), "x": None}
    _read_back(old)
    meta = {"item_id": "a", "domain": "d", "pool": "p", "reviewers": 1, "held_at_ms": 1,
            "content_hash": "h"}  # fmt: skip
    view = _view(HoldMeta.of(meta), old)
    assert orjson.loads(view.model_dump_json())["record"]["output"]["lab"] is None
