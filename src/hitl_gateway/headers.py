"""Kafka header names the gateway writes: part of its wire contract with consumers."""

from __future__ import annotations

from typing import Any

ROUTE = "hitl.route"
RULE = "hitl.rule"
POLICY_VERSION = "hitl.policy.version"
HOLD = "hitl.hold"  # JSON: the hold's state, pool, deadline, reasons, content hash
HOLD_KEY = "hitl.hold.key"  # the input record's own key (the hold is keyed by item id)
DECISION_ID = "hitl.decision.id"  # the decision that released or blocked a held item
DECISION_REVIEWER = "hitl.decision.reviewer"  # its reviewer (on the hold's tombstone)
REJECT_REASON = "hitl.reject.reason"
GATEWAY_VERSION = "hitl.gateway.version"
SOURCE_TOPIC = "hitl.source.topic"
SOURCE_PARTITION = "hitl.source.partition"
SOURCE_OFFSET = "hitl.source.offset"
DLQ_REASON = "hitl.dlq.reason"
DLQ_MESSAGE = "hitl.dlq.message"


def source_headers(record: Any) -> list[tuple[str, bytes]]:
    """Where an input record came from, so any output can be traced back to it."""
    fixed = _SOURCE.get((record.topic, record.partition))
    if fixed is None:  # encoded once per input partition
        fixed = (
            (SOURCE_TOPIC, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
        )
        _SOURCE[(record.topic, record.partition)] = fixed
    return [*fixed, (SOURCE_OFFSET, str(record.offset).encode())]


_SOURCE: dict[tuple[str, int], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}


def original_headers(record: Any) -> list[tuple[str, bytes]]:
    """The producer's own headers, kept as they were (a null header value becomes empty)."""
    return [(key, value if value is not None else b"") for key, value in record.headers or ()]
