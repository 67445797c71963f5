"""The audit trail: every routing and review decision, chained per audit partition.

Only the owner of input partition p writes audit partition p (see routing.py), so each
partition is one chain. With an audit key, each event names the key (``key_id``) and its
place in the partition (``seq``, from 0), and ``hash = HMAC-SHA256(key, prev_hash + "\\n" +
canonical event)``; a transaction that brings the events not yet vouched for to
``checkpoint_every``, or ends ``checkpoint_interval`` after the last checkpoint, ends with a
checkpoint: a keyed statement of the partition, its first and last sequence numbers since
the previous one and the last hash. Without a key the links are plain
``sha256(prev_hash + "\\n" + canonical event)`` and there are no sequence numbers or
checkpoints. The canonical event is the event without its hash fields, as sorted-key JSON.
A batch's links become the chain head only when its transaction commits; an aborted batch
rolls back. Events hold ids, versions, reasons and content hashes: never a payload.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"
_HASH_FIELDS = ("prev_hash", "hash")
# What a checkpoint's own MAC covers; the prefix keeps it apart from any link's input, which
# starts with a 64-digit hash.
CHECKPOINT_FIELDS = (
    "type",
    "partition",
    "first_seq",
    "last_seq",
    "last_hash",
    "since_ms",
    "at_ms",
    "key_id",
)
_CHECKPOINT_PREFIX = b"hitl-audit-checkpoint\n"
_BLOCK_BYTES = 64  # SHA-256's block: HMAC pads the key to it
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def canonical(event: Mapping[str, Any]) -> bytes:
    # Copied without its hash fields only when it has them (an event being sealed has not).
    has_links = _HASH_FIELDS[0] in event or _HASH_FIELDS[1] in event
    body = {k: v for k, v in event.items() if k not in _HASH_FIELDS} if has_links else event
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, event: Mapping[str, Any], key: bytes | None = None) -> str:
    """The hash that follows ``prev_hash`` with ``event``: keyed (HMAC-SHA256) or plain."""
    message = prev_hash.encode() + b"\n" + canonical(event)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.digest(key, message, "sha256").hex()


def checkpoint_mac(checkpoint: Mapping[str, Any], key: bytes) -> str:
    """A checkpoint's own MAC, over its statement (``CHECKPOINT_FIELDS``) alone, so a copy of
    the checkpoint can be checked without the events before it."""
    statement = {name: checkpoint.get(name) for name in CHECKPOINT_FIELDS}
    message = _CHECKPOINT_PREFIX + orjson.dumps(statement, option=orjson.OPT_SORT_KEYS)
    return hmac.digest(key, message, "sha256").hex()


class Hmac:
    """HMAC-SHA256 (RFC 2104) with the padded key's blocks hashed once: OpenSSL's one-shot
    ``hmac.digest`` sets its context up on every call, twice the cost of a link."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK_BYTES:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK_BYTES, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


@dataclass(frozen=True, slots=True)
class SealingKey:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Sealing:
    """How chains are sealed: the active key (None: plain SHA-256 links, no sequence numbers,
    no checkpoints), and when a checkpoint is due."""

    key: SealingKey | None = None
    checkpoint_every: int = 1_000
    checkpoint_interval_ms: int = 60_000


class ChainHead(NamedTuple):
    """Where a partition's chain stands: the last hash, the next sequence number, and the
    range the next checkpoint will vouch for: its first sequence number and when it began
    (None: nothing sealed in it yet)."""

    hash: str = GENESIS
    seq: int = 0
    first_seq: int = 0
    since_ms: int | None = None


_FRESH = ChainHead()
_UNKEYED = Sealing()

# What ``AuditChain.pending`` returns and ``rewind`` takes back: (hash, seq, since_ms).
Mark = tuple[str, int, int | None]


class AuditChain:
    """The head of one partition's chain, with a pending extension for the open batch."""

    def __init__(
        self,
        head: ChainHead = _FRESH,
        *,
        partition: int = 0,
        sealing: Sealing = _UNKEYED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.head = head
        self.partition = partition
        self._sealing = sealing
        key = sealing.key
        self._key_id = key.key_id if key is not None else None
        self._secret = key.secret if key is not None else b""
        self._mac = Hmac(self._secret)
        self._clock = clock
        self._hash, self._seq, self._first_seq, self._since_ms = head

    @property
    def keyed(self) -> bool:
        return self._key_id is not None

    def seal(self, event: dict[str, Any]) -> bytes:
        prev = self._hash
        if self._key_id is None:
            digest = link(prev, event)
            sealed = {**event, "prev_hash": prev, "hash": digest}  # replaces old links
            self._hash = digest
            return orjson.dumps(sealed)
        if "hash" in event or "prev_hash" in event:  # an event built from a sealed one
            event = {k: v for k, v in event.items() if k not in _HASH_FIELDS}
        body = orjson.dumps(
            {**event, "seq": self._seq, "key_id": self._key_id}, option=orjson.OPT_SORT_KEYS
        )
        digest = self._mac.hexdigest(prev.encode() + b"\n" + body)
        self._hash = digest
        self._seq += 1
        if self._since_ms is None:  # the first event of a fresh chain's first range
            self._since_ms = int(self._clock() * 1000)
        # The canonical body with the links appended: what a reader parses and, without
        # the links, dumps again to the same bytes (the body is never empty).
        return b"".join((body[:-1], b',"prev_hash":"', prev.encode(), b'","hash":"',
                         digest.encode(), b'"}'))  # fmt: skip

    def checkpoint(self, now_ms: int) -> bytes | None:
        """A sealed checkpoint if one is due (keyed chains only): events not yet vouched for
        number ``checkpoint_every``, or the range began ``checkpoint_interval_ms`` ago. Part
        of the open batch: it commits or rolls back with the events it vouches for."""
        if self._key_id is None or self._seq == self._first_seq:
            return None
        since = self._since_ms if self._since_ms is not None else now_ms
        s = self._sealing
        if self._seq - self._first_seq < s.checkpoint_every and (
            now_ms - since < s.checkpoint_interval_ms
        ):
            return None
        statement: dict[str, Any] = {
            "type": CHECKPOINT,
            "partition": self.partition,
            "first_seq": self._first_seq,
            "last_seq": self._seq - 1,
            "last_hash": self._hash,
            "since_ms": since,
            "at_ms": now_ms,
            "key_id": self._key_id,
        }
        statement["mac"] = checkpoint_mac(statement, self._secret)
        sealed = self.seal(statement)
        self._first_seq, self._since_ms = self._seq, now_ms
        return sealed

    def commit(self) -> None:
        self.head = ChainHead(self._hash, self._seq, self._first_seq, self._since_ms)

    def rollback(self) -> None:
        self._hash, self._seq, self._first_seq, self._since_ms = self.head

    @property
    def pending(self) -> Mark:
        """Where the open batch's extension has got to (``rewind`` takes it back there)."""
        return self._hash, self._seq, self._since_ms

    def rewind(self, pending: Mark) -> None:
        """Forget what was sealed since ``pending`` (outputs that will not be written)."""
        self._hash, self._seq, self._since_ms = pending


def head_of(values: Iterable[bytes | None]) -> str:
    """The chain head after these audit values (the last one that carries a hash)."""
    head = GENESIS
    for value in values:
        if value:
            head = orjson.loads(value).get("hash", head)
    return head


def _event(value: bytes | None) -> dict[str, Any] | None:
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("hash"), str) else None


def restore(
    records: Sequence[tuple[bytes | None, int]], *, complete: bool
) -> tuple[ChainHead, bool]:
    """The chain head after ``records`` (value, Kafka timestamp): the last records of an
    audit partition, in offset order (``complete``: from the partition's beginning).

    The next checkpoint's range starts after the last checkpoint, or where the keyed chain
    began (seq 0, after any unkeyed events); when neither is among the records, at the next
    event (what came between is vouched for by its links alone). Also returns whether
    reading further back could not tell more. Values that are not audit events are skipped.
    """
    events = [(event, ts) for value, ts in records if (event := _event(value)) is not None]
    if not events:
        return ChainHead(), complete
    last = events[-1][0]
    seq = last.get("seq")
    if last.get("key_id") is None or not isinstance(seq, int):  # unkeyed: a keyed chain starts
        return ChainHead(last["hash"]), True
    for event, ts in reversed(events):
        here = event.get("seq")
        if event.get("key_id") is None or not isinstance(here, int):
            break  # the keyed chain began after it (with seq 0, which was not found)
        if event.get("type") == CHECKPOINT and isinstance(event.get("at_ms"), int):
            return ChainHead(last["hash"], seq + 1, here + 1, event["at_ms"]), True
        if here == 0:
            return ChainHead(last["hash"], seq + 1, 0, ts), True
    else:
        if not complete:
            return ChainHead(last["hash"], seq + 1, seq + 1), False
    return ChainHead(last["hash"], seq + 1, seq + 1), True
