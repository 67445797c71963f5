"""The codec never raises: every byte string is classified as a record or a reason."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_gateway.codec import decode
from hitl_gateway.models import DeadLetterReason, InputRecord, Invalid

LIMITS = {"max_bytes": 10_000, "max_id_length": 64}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(st.binary(max_size=2_000) | st.none())
def test_arbitrary_bytes_are_classified_never_raised(value: bytes | None) -> None:
    result = decode(value, **LIMITS)
    assert isinstance(result, InputRecord | Invalid)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "domain",
                "confidence",
                "language",
                "judge",
                "metadata",
                "model",
                "created_at",
                "output",
                "x",
            ]
        ),
        json_values,
        max_size=9,
    )
)
@settings(max_examples=300, deadline=None)  # a property, not a timing: CI hosts are busy
def test_arbitrary_json_objects_are_classified(obj: dict[str, object]) -> None:
    result = decode(orjson.dumps(obj), **LIMITS)
    if isinstance(result, InputRecord):
        assert isinstance(obj["id"], str)
        assert isinstance(obj["domain"], str)
    else:
        assert result.message


@given(
    item_id=st.text(min_size=1, max_size=64),
    domain=st.text(min_size=1, max_size=32),
    confidence=st.floats(min_value=0, max_value=1) | st.none(),
    output=json_values,
)
def test_valid_records_decode_with_their_fields(
    item_id: str, domain: str, confidence: float | None, output: object
) -> None:
    body = {"id": item_id, "domain": domain, "output": output, "extra": [1]}
    if confidence is not None:
        body["confidence"] = confidence
    result = decode(orjson.dumps(body), **LIMITS)
    assert isinstance(result, InputRecord), result
    assert (result.id, result.domain, result.confidence) == (item_id, domain, confidence)


@given(st.floats().filter(lambda f: math.isnan(f) or not 0 <= f <= 1))
def test_confidence_outside_unit_interval_is_out_of_range(value: float) -> None:
    raw = (
        b'{"id": "a", "domain": "d", "confidence": %s}'
        % repr(value).replace("nan", "NaN").replace("inf", "Infinity").encode()
    )
    result = decode(raw, **LIMITS)
    assert isinstance(result, Invalid)
    assert result.reason is DeadLetterReason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, DeadLetterReason.NULL_VALUE),
        (b"x" * 10_001, DeadLetterReason.TOO_LARGE),
        (b"\xff", DeadLetterReason.NOT_UTF8),
        (b"{", DeadLetterReason.NOT_JSON),
        (b"[" * 5_000, DeadLetterReason.NOT_JSON),
        (b"null", DeadLetterReason.NOT_OBJECT),
        (b'{"domain": "d"}', DeadLetterReason.MISSING_FIELD),
        (b'{"id": ["a"], "domain": "d"}', DeadLetterReason.WRONG_TYPE),
        (
            b'{"id": "a", "domain": "d", "judge": {"score": Infinity}}',
            DeadLetterReason.OUT_OF_RANGE,
        ),
        (b'{"id": "%s", "domain": "d"}' % (b"a" * 65), DeadLetterReason.OUT_OF_RANGE),
        (b'{"id": "a", "domain": "d", "created_at": "yesterday"}', DeadLetterReason.INVALID_FIELD),
    ],
)
def test_each_reason(value: bytes | None, reason: DeadLetterReason) -> None:
    result = decode(value, **LIMITS)
    assert isinstance(result, Invalid)
    assert result.reason is reason, result.message


def test_message_names_the_field() -> None:
    result = decode(b'{"id": "a", "domain": "d", "metadata": {"tenant": 5}}', **LIMITS)
    assert isinstance(result, Invalid)
    assert "metadata.tenant" in result.message
