"""The tolerant record path: no record the client cannot parse stops or wedges the consumer.

Why: aiokafka's C record parser decodes header names as strict UTF-8 (Kafka says String; the
broker and librdkafka do not check) and raises ``UnicodeDecodeError`` from ``getmany``, out of
the fetcher's per-partition generator (``PartitionRecords._unpack_records``) and out of the
loop over partitions: records ``getmany`` had already taken from other partitions are dropped
while their positions have moved past them, so a consumer that retries skips them silently
(a CRC mismatch, raised there too, does the same; that one is left to aiokafka). Seeking
past the record does not help: a fetch returns whole batches, and the parser fails on the
same record below the fetch offset.

How: ``install`` replaces two names in ``aiokafka.consumer.fetcher``. ``MemoryRecords`` keeps
each batch's raw bytes (a batch starts with offset int64 and length int32: 12 + length bytes)
and wraps each v2 batch: iterating it yields the C parser's records; if the C parser raises,
the batch is parsed again by aiokafka's pure-Python parser with header names decoded with
``surrogateescape``, and the records not yet yielded follow. If even that fails, one stand-in
record covers the rest of the batch: its last offset, its raw bytes as the value, one header
named ``UNREADABLE`` (a lone high surrogate: no header off the wire decodes to it).
A batch whose CRC does not match is left to aiokafka, which raises as before (its header
fields cannot be trusted; corruption in transit is fetched again).
``PartitionRecords`` tells the records their partition and fetch offset. Routing dead-letters
both kinds (``poisoned``), as Kafka Streams' log-and-continue handler would. With ``fail``
the tolerant path raises ``PoisonRecordError`` naming the partition and offset, unless the
record is below the fetch offset (skipped anyway: resetting the group's offset past it is the
way out). The C path costs one generator step per record (about 270 instructions, 1.3%).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Literal

import structlog
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.util import decode_varint

from hitl_gateway.errors import GatewayError
from hitl_gateway.headers import DLQ_HEADER_KEY, raw_name
from hitl_gateway.models import DeadLetterReason, Invalid

Mode = Literal["deadletter", "fail"]

log = structlog.get_logger(__name__)

# The stand-in record's only header: its value says which offsets were lost and why.
UNREADABLE = "\ud800hitl.unreadable"

_MemoryRecords = fetcher.MemoryRecords
_LENGTH = struct.Struct(">i")  # after the batch's base offset
_MAGIC_AT = 16


class PoisonRecordError(GatewayError):
    """A record the consumer cannot read, with ``poison_records=fail``."""


def install(mode: Mode) -> None:
    """Put the tolerant path into aiokafka's fetcher (idempotent). Process-wide: ``mode``
    applies to every consumer in the process."""
    TolerantRecords.mode = mode
    fetcher.MemoryRecords = TolerantRecords
    fetcher.PartitionRecords = _Partition


def poisoned(record: Any) -> Invalid | None:
    """Why a record the tolerant path let through must be dead-lettered: a header name that
    is not UTF-8, or the stand-in for an unreadable batch (None: neither)."""
    for key, value in record.headers:
        if key.isascii():
            continue
        if key == UNREADABLE:
            return Invalid(DeadLetterReason.UNREADABLE, (value or b"").decode())
        try:
            key.encode()
        except UnicodeEncodeError:
            message = f"header name {raw_name(key)!r} is not UTF-8 (kept in {DLQ_HEADER_KEY})"
            return Invalid(DeadLetterReason.BAD_HEADER, message)
    return None


class _Partition(PartitionRecords):  # type: ignore[misc]  # untyped base
    """aiokafka's per-partition iterator, telling tolerant records where they come from."""

    def __init__(self, tp: Any, records: Any, aborted: Any, fetch_offset: int, *rest: Any):
        if isinstance(records, TolerantRecords):
            records.tp, records.fetch_offset = tp, fetch_offset
        super().__init__(tp, records, aborted, fetch_offset, *rest)


class TolerantRecords:
    """aiokafka's ``MemoryRecords`` (one fetched partition's batches), keeping raw bytes."""

    __slots__ = ("_inner", "_pos", "data", "fetch_offset", "tp")
    mode: Mode = "deadletter"

    def __init__(self, data: bytes) -> None:
        self._inner = _MemoryRecords(data)
        self.data = data
        self._pos = 0
        self.tp: Any = None  # set by _Partition
        self.fetch_offset = -1

    def __getattr__(self, name: str) -> Any:  # has_next, size_in_bytes
        return getattr(self._inner, name)

    def next_batch(self) -> Any:
        batch = self._inner.next_batch()
        if batch is None:
            return None
        start = self._pos
        self._pos = end = start + 12 + _LENGTH.unpack_from(self.data, start + 8)[0]
        if self.data[start + _MAGIC_AT] < 2:
            return batch  # a v0/v1 message set: no headers
        return _Batch(batch, self, start, end)


class _Batch:
    """One v2 batch: the C parser's records; after it fails, the lenient parse's rest."""

    __slots__ = ("_end", "_inner", "_records", "_start")

    def __init__(self, inner: Any, records: TolerantRecords, start: int, end: int) -> None:
        self._inner, self._records, self._start, self._end = inner, records, start, end

    def __getattr__(self, name: str) -> Any:  # base_offset, producer_id, next_offset, ...
        return getattr(self._inner, name)

    def validate_crc(self) -> bool:
        # A mismatch is aiokafka's to raise, as before: the batch's own header fields (its
        # offsets, its producer) cannot be trusted, and corruption in transit is fetched
        # again, so it is never turned into a dead letter here.
        return bool(self._inner.validate_crc())

    def __next__(self) -> Any:  # a control batch's marker (_contains_abort_marker)
        return next(self._inner)

    def __iter__(self) -> Iterator[Any]:
        before = self._inner.base_offset - 1
        record = None
        try:
            for record in self._inner:
                yield record
        except Exception as exc:  # noqa: BLE001 - whatever the C parser rejects
            yield from self._rest(before if record is None else record.offset, exc)

    def _rest(self, after: int, exc: Exception) -> Iterator[Any]:
        """The records after offset ``after`` (the last yielded), leniently parsed."""
        src, inner = self._records, self._inner
        raw = src.data[self._start : self._end]
        rest: list[Any] = []
        error: Exception | None = None
        try:
            for record in _LenientBatch(raw):
                if record.offset > after:
                    rest.append(record)
        except Exception as err:  # noqa: BLE001 - the rest of the batch is unreadable
            error = err
        last = inner.base_offset + inner.last_offset_delta
        offset = rest[0].offset if rest else None  # the record the C parser failed on
        topic, partition = (src.tp.topic, src.tp.partition) if src.tp else (None, None)
        log.warning("poison_record", topic=topic, partition=partition, offset=offset,
                    batch=f"{inner.base_offset}-{last}", error=repr(exc), mode=src.mode,
                    unreadable=None if error is None else repr(error))  # fmt: skip
        first = rest[-1].offset + 1 if rest else after + 1  # of the unreadable rest, if any
        if src.mode == "fail":
            # The first record that cannot be read at or past the fetch offset stops the
            # gateway; those below it are passed over (a reset past one record moves on to
            # the next, never past it).
            bad = [r.offset for r in rest if r.offset >= src.fetch_offset and _bad_name(r)]
            if bad or (error is not None and last >= src.fetch_offset):
                where = f"offset {bad[0]}" if bad else f"offsets {first}-{last}"
                raise PoisonRecordError(
                    f"unreadable record in {topic} partition {partition} at {where}: {exc!r}"
                    " (HITL_KAFKA__POISON_RECORDS=fail)"
                ) from exc
        yield from rest
        if error is not None:
            message = (
                f"offsets {first}-{last} of the batch at {inner.base_offset} ({len(raw)} bytes,"
                f" the value) could not be parsed: {error!r}"
            )
            headers = [(UNREADABLE, message.encode())]
            yield _DefaultRecordPy(
                last, inner.max_timestamp, inner.timestamp_type, None, bytes(raw), headers
            )


class _LenientBatch(_DefaultRecordBatchPy):  # type: ignore[misc]  # untyped base
    """aiokafka's pure-Python v2 batch parser, decoding header names with surrogateescape
    (the one change from its ``_read_msg``, whose layout comments are in aiokafka)."""

    _pos: int

    def _read_msg(
        self, decode_varint: Callable[[bytearray, int], tuple[int, int]] = decode_varint
    ) -> Any:
        buffer = self._buffer
        length, pos = decode_varint(buffer, self._pos)
        start_pos = pos
        _, pos = decode_varint(buffer, pos)  # attributes: unused
        ts_delta, pos = decode_varint(buffer, pos)
        log_append = self.timestamp_type == self.LOG_APPEND_TIME
        timestamp = self.max_timestamp if log_append else self.first_timestamp + ts_delta
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _nullable(buffer, pos, decode_varint)
        value, pos = _nullable(buffer, pos, decode_varint)
        count, pos = decode_varint(buffer, pos)
        if count < 0:
            raise CorruptRecordException(f"Found invalid number of record headers {count}")
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(count):
            name, pos = _nullable(buffer, pos, decode_varint)
            if name is None:
                raise CorruptRecordException("Invalid negative header key size")
            h_value, pos = _nullable(buffer, pos, decode_varint)
            headers.append((name.decode("utf-8", "surrogateescape"), h_value))
        if pos - start_pos != length:
            raise CorruptRecordException(
                f"Invalid record size: expected to read {length} bytes in record payload,"
                f" but instead read {pos - start_pos}"
            )
        self._pos = pos
        offset = self.base_offset + offset_delta
        return _DefaultRecordPy(offset, timestamp, self.timestamp_type, key, value, headers)


def _bad_name(record: Any) -> bool:
    """A header name that is not UTF-8 (read with surrogate escapes)."""
    for key, _ in record.headers:
        if not key.isascii():
            try:
                key.encode()
            except UnicodeEncodeError:
                return True
    return False


def _nullable(
    buffer: bytearray, pos: int, decode_varint: Callable[[bytearray, int], tuple[int, int]]
) -> tuple[bytes | None, int]:
    """A varint length and that many bytes (a negative length: null)."""
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise CorruptRecordException(f"Can't read {size} bytes from pos {pos}")
    return bytes(buffer[pos : pos + size]), pos + size
