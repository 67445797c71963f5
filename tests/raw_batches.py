"""Kafka v2 record batches built by hand, as a producer that does not check header names
writes them (kcat, librdkafka): aiokafka's builder only takes ``str`` names, so each name that
is not UTF-8 is written as a same-length placeholder, patched in, and the CRC recomputed."""

from __future__ import annotations

import struct

from aiokafka.codec import gzip_encode
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

Header = tuple[bytes, bytes | None]  # a header name as raw bytes, and its value
Record = tuple[bytes | None, bytes | None, list[Header]]  # key, value, headers

_HEADER_SIZE = 61  # bytes before the first record
_ATTRIBUTES_AT = 21  # the CRC covers everything from here on
_CRC_AT = 17
_GZIP = 0x01


def raw_batch(records: list[Record], *, base_offset: int = 0, gzip: bool = False) -> bytes:
    """One batch holding ``records`` at offsets ``base_offset``, ``base_offset + 1``, ...;
    ``gzip``: its records compressed, as a producer with ``compression.type=gzip`` sends it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    patches: list[tuple[bytes, bytes]] = []
    for delta, (key, value, headers) in enumerate(records):
        named: list[tuple[str, bytes | None]] = []
        for name, header_value in headers:
            try:
                named.append((name.decode(), header_value))
            except UnicodeDecodeError:
                placeholder = "\x7f" * len(name)  # DEL: in no other part of these batches
                patches.append((placeholder.encode(), name))
                named.append((placeholder, header_value))
        builder.append(delta, timestamp=None, key=key, value=value, headers=named)
    buf = bytearray(builder.build())
    at = _HEADER_SIZE
    for placeholder, name in patches:
        at = buf.index(placeholder, at)
        buf[at : at + len(name)] = name
        at += len(name)
    if gzip:
        buf[_HEADER_SIZE:] = gzip_encode(bytes(buf[_HEADER_SIZE:]))
        struct.pack_into(">i", buf, 8, len(buf) - 12)  # the batch length
        attributes = struct.unpack_from(">h", buf, _ATTRIBUTES_AT)[0]
        struct.pack_into(">h", buf, _ATTRIBUTES_AT, attributes | _GZIP)
    struct.pack_into(">q", buf, 0, base_offset)  # not covered by the CRC
    struct.pack_into(">I", buf, _CRC_AT, calc_crc32c(bytes(buf[_ATTRIBUTES_AT:])))
    return bytes(buf)
