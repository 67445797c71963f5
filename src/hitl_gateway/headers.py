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
# On the decisions topic: an operator's command rather than a reviewer's decision.
COMMAND = "hitl.command"
# On the decisions topic: a review tool's signature (review/signing.py).
SIG_KEY = "hitl.sig.key"  # the signer's key id
SIG = "hitl.sig"  # base64 signature over the value and the signature headers
SIG_EXPIRES = "hitl.sig.expires"  # epoch ms; judged by the broker's timestamp
SIG_NONCE = "hitl.sig.nonce"  # one use: the same nonce elsewhere is a replay
SIG_ORIGIN = "hitl.sig.origin"  # the first signer, when the gateway re-signs a forward
SWITCH = "hitl.switch"  # on the holds topic: a stop switch event, not a hold (stopswitch.py)
GATEWAY_VERSION = "hitl.gateway.version"
SOURCE_TOPIC = "hitl.source.topic"
SOURCE_PARTITION = "hitl.source.partition"
SOURCE_OFFSET = "hitl.source.offset"
DLQ_REASON = "hitl.dlq.reason"
DLQ_MESSAGE = "hitl.dlq.message"
# A producer header whose name is not UTF-8 cannot be written back as a header name: in its
# place go two headers, the name's raw bytes and the header's value (see original_headers).
DLQ_HEADER_KEY = "hitl.dlq.header.key"
DLQ_HEADER_VALUE = "hitl.dlq.header.value"


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
    """The producer's own headers, kept as they were (a null header value becomes empty).

    A name that is not UTF-8 (decoded with surrogate escapes by the tolerant record path,
    poison.py) cannot be produced: in its place go ``DLQ_HEADER_KEY`` with the name's raw
    bytes and ``DLQ_HEADER_VALUE`` with the value. A name that never came off the wire (the
    stand-in for an unreadable batch) is left out."""
    out: list[tuple[str, bytes]] = []
    for key, value in record.headers or ():
        if not key.isascii() and not _is_utf8(key):
            raw = raw_name(key)
            if raw is not None:
                out += ((DLQ_HEADER_KEY, raw), (DLQ_HEADER_VALUE, value or b""))
            continue
        out.append((key, value if value is not None else b""))
    return out


def raw_name(key: str) -> bytes | None:
    """The bytes a header name was read from, decoded with surrogate escapes (None: a name
    that was not read off the wire)."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _is_utf8(key: str) -> bool:
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True
