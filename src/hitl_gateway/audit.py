"""The audit trail: every routing and review decision, hash-chained per audit partition.

Only the owner of input partition p writes audit partition p (see routing.py), so each
partition is one chain: ``hash = sha256(prev_hash + "\\n" + canonical event)``, where the
canonical event is the event without its hash fields, as sorted-key JSON. A batch's links
become the chain head only when its transaction commits; an aborted batch rolls back.
Events hold ids, versions, reasons and content hashes: never a payload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64
_HASH_FIELDS = ("prev_hash", "hash")


def canonical(event: dict[str, Any]) -> bytes:
    # Copied without its hash fields only when it has them (an event being sealed has not).
    has_links = _HASH_FIELDS[0] in event or _HASH_FIELDS[1] in event
    body = {k: v for k, v in event.items() if k not in _HASH_FIELDS} if has_links else event
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event)).hexdigest()


class AuditChain:
    """The head of one partition's chain, with a pending extension for the open batch."""

    def __init__(self, head: str = GENESIS) -> None:
        self.head = head
        self._pending = head

    def seal(self, event: dict[str, Any]) -> bytes:
        digest = link(self._pending, event)
        sealed = {**event, "prev_hash": self._pending, "hash": digest}  # replaces old links
        self._pending = digest
        return orjson.dumps(sealed)

    def commit(self) -> None:
        self.head = self._pending

    def rollback(self) -> None:
        self._pending = self.head

    @property
    def pending(self) -> str:
        """Where the open batch's extension has got to (``rewind`` takes it back there)."""
        return self._pending

    def rewind(self, pending: str) -> None:
        """Forget what was sealed since ``pending`` (outputs that will not be written)."""
        self._pending = pending


def head_of(values: Iterable[bytes | None]) -> str:
    """The chain head after these audit values (the last one that carries a hash)."""
    head = GENESIS
    for value in values:
        if value:
            head = orjson.loads(value).get("hash", head)
    return head


@dataclass(frozen=True, slots=True)
class Break:
    partition: int
    offset: int
    problem: str

    def __str__(self) -> str:
        return f"partition {self.partition} offset {self.offset}: {self.problem}"


@dataclass(slots=True)
class Verification:
    events: int = 0
    partitions: int = 0
    first_break: Break | None = None


def verify(records: Iterable[tuple[int, int, bytes | None]]) -> Verification:
    """Recompute every chain from (partition, offset, value) in offset order per partition.

    A chain may start after GENESIS where retention removed its beginning; from its first
    event on, every link must hold. Returns the first broken link, if any.
    """
    heads: dict[int, str] = {}
    result = Verification()
    for partition, offset, value in records:
        result.events += 1
        try:
            event = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            result.first_break = Break(partition, offset, "not a JSON audit event")
            return result
        prev, claimed = event.get("prev_hash"), event.get("hash")
        expected_prev = heads.get(partition, prev)
        if prev != expected_prev:
            result.first_break = Break(
                partition, offset, f"prev_hash {prev} does not follow {expected_prev}"
            )
            return result
        if not isinstance(prev, str) or link(prev, event) != claimed:
            result.first_break = Break(partition, offset, "hash does not match the event")
            return result
        heads[partition] = claimed
    result.partitions = len(heads)
    return result
