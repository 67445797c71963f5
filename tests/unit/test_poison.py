"""The tolerant record path (poison.py) on hand-built batches, through aiokafka's own
per-partition iterator: a header name that is not UTF-8 makes aiokafka's C parser fail the
whole fetch; with the tolerant path the record comes through to be dead-lettered and the rest
of its batch is kept."""

from __future__ import annotations

import inspect
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiokafka.consumer.fetcher as aiokafka_fetcher
import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from hitl_gateway import headers, poison
from hitl_gateway.models import DeadLetterReason

from ..raw_batches import Record, raw_batch

TP = TopicPartition("outputs", 0)
BAD_NAME = b"\xe9t\xe9"  # "été" in Latin-1: not UTF-8
GOOD: Record = (b"k", b'{"id": "1"}', [(b"trace", b"t-1")])
POISON: Record = (b"p", b'{"id": "poison"}', [(b"trace", b"t-2"), (BAD_NAME, b"v")])


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    before = (aiokafka_fetcher.MemoryRecords, aiokafka_fetcher.PartitionRecords)
    mode = poison.TolerantRecords.mode
    yield
    aiokafka_fetcher.MemoryRecords, aiokafka_fetcher.PartitionRecords = before
    poison.TolerantRecords.mode = mode


def _records(data: bytes, fetch_offset: int = 0) -> list[Any]:
    """What a consumer's ``getmany`` returns for one fetched partition: aiokafka's fetcher
    with the names ``install`` sets."""
    partition = poison._Partition(
        TP, poison.TolerantRecords(data), [], fetch_offset, None, None, True, 0
    )
    return list(partition)


def _batches(*batches: bytes) -> bytes:
    return b"".join(batches)


def test_the_c_parser_fails_on_it() -> None:
    """The defect: aiokafka alone raises from the middle of the batch."""
    batch = MemoryRecords(raw_batch([GOOD, POISON, GOOD])).next_batch()
    with pytest.raises(UnicodeDecodeError):
        list(batch)


def test_the_rest_of_the_batch_and_the_next_batches_are_kept() -> None:
    data = _batches(
        raw_batch([GOOD, GOOD, POISON, GOOD, GOOD]), raw_batch([GOOD, GOOD], base_offset=5)
    )
    got = _records(data)
    assert [r.offset for r in got] == [0, 1, 2, 3, 4, 5, 6]
    assert [poison.poisoned(r) is None for r in got] == [True, True, False, True, True, True, True]
    bad = got[2]
    assert (bad.key, bad.value) == (POISON[0], POISON[1])
    assert bad.headers[0] == ("trace", b"t-2")
    name, value = bad.headers[1]
    assert (headers.raw_name(name), value) == (BAD_NAME, b"v")
    verdict = poison.poisoned(bad)
    assert verdict is not None
    assert verdict.reason is DeadLetterReason.BAD_HEADER
    assert repr(BAD_NAME) in verdict.message
    # The good records are exactly what the C parser yields for a clean batch.
    clean = _records(raw_batch([GOOD, GOOD, GOOD, GOOD, GOOD]))
    assert [(r.key, r.value, r.headers) for r in got[:2] + got[3:5]] == [
        (r.key, r.value, r.headers) for r in clean[:4]
    ]


def test_the_lenient_parser_reads_a_compressed_batch() -> None:
    got = _records(raw_batch([GOOD, POISON, GOOD], gzip=True))
    assert [r.offset for r in got] == [0, 1, 2]
    assert [poison.poisoned(r) is not None for r in got] == [False, True, False]


def test_the_lenient_parser_alone() -> None:
    batch = poison._LenientBatch(raw_batch([POISON, GOOD], base_offset=40))
    first, second = list(batch)
    assert (first.offset, second.offset) == (40, 41)
    assert first.headers == [("trace", b"t-2"), (BAD_NAME.decode("utf-8", "surrogateescape"), b"v")]
    assert second.headers == [("trace", b"t-1")]


def test_a_batch_no_parser_can_read_becomes_one_stand_in_record() -> None:
    """A record's length is corrupted (the CRC recomputed): records before it are kept, the
    rest of the batch is one stand-in at the batch's last offset carrying its raw bytes."""
    batch = bytearray(raw_batch([GOOD, GOOD, (b"x", b"y" * 20, []), GOOD, GOOD]))
    third = batch.index(b"y" * 20) - 1  # the value's length varint (zigzag 20 = 40)
    batch[third] = 44  # 22 bytes: the record reads past its end
    _recrc(batch)
    got = _records(bytes(batch) + raw_batch([GOOD], base_offset=5))
    assert [r.offset for r in got] == [0, 1, 4, 5]
    stand_in = got[2]
    assert stand_in.value == bytes(batch)
    verdict = poison.poisoned(stand_in)
    assert verdict is not None
    assert verdict.reason is DeadLetterReason.UNREADABLE
    assert "offsets 2-4" in verdict.message
    assert headers.original_headers(stand_in) == []  # the marker never leaves the process


def test_a_batch_whose_crc_does_not_match_is_left_to_aiokafka() -> None:
    """Its header fields (offsets, producer) cannot be trusted, and corruption in transit is
    fetched again: aiokafka raises CorruptRecordException as it always did."""
    corrupt = bytearray(raw_batch([GOOD, GOOD], base_offset=2))
    corrupt[-1] ^= 1  # a bit of the last header's value: the CRC no longer matches
    data = raw_batch([GOOD, GOOD]) + bytes(corrupt) + raw_batch([GOOD], base_offset=4)
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        _records(data)


def test_fail_mode_stops_at_any_unreadable_record_past_the_fetch_offset() -> None:
    """Two bad names in one batch: with the fetch offset reset past the first, the second
    still stops the gateway (it is not passed over with the first)."""
    data = raw_batch([GOOD, POISON, GOOD, POISON, GOOD])
    poison.install("fail")
    with pytest.raises(poison.PoisonRecordError, match="at offset 1"):
        _records(data)
    with pytest.raises(poison.PoisonRecordError, match="at offset 3"):
        _records(data, fetch_offset=2)
    assert [r.offset for r in _records(data, fetch_offset=4)] == [4]


async def test_getmany_keeps_what_it_took_from_other_partitions() -> None:
    """The defect in aiokafka's fetcher: an error from one partition's records drops what the
    same call had taken from another partition, whose position has moved past it."""

    async def fetched(records_class: Any, partition_class: Any) -> tuple[Any, list[int]]:
        subscriptions = SubscriptionState()
        fetcher = aiokafka_fetcher.Fetcher(AIOKafkaClient(bootstrap_servers=[]), subscriptions)
        tps = [TopicPartition("outputs", 0), TopicPartition("outputs", 1)]
        subscriptions.assign_from_user(set(tps))
        assignment = subscriptions.subscription.assignment
        for tp, batch in zip(tps, [[GOOD, GOOD, GOOD], [GOOD, POISON, GOOD]], strict=True):
            subscriptions.seek(tp, 0)
            records = partition_class(tp, records_class(raw_batch(batch)), [], 0, None, None,
                                      True, aiokafka_fetcher.READ_COMMITTED)  # fmt: skip
            fetcher._records[tp] = aiokafka_fetcher.FetchResult(
                tp, assignment=assignment, partition_records=records, backoff=0
            )
        try:
            got: Any = await fetcher.fetched_records([])
        except UnicodeDecodeError as exc:
            got = exc
        finally:
            await fetcher.close()
        return got, [assignment.state_value(tp).position for tp in tps]

    got, positions = await fetched(MemoryRecords, aiokafka_fetcher.PartitionRecords)
    assert isinstance(got, UnicodeDecodeError)
    assert positions == [3, 0], "partition 0 moved past records getmany never returned"
    got, positions = await fetched(poison.TolerantRecords, poison._Partition)
    assert {tp.partition: [r.offset for r in rs] for tp, rs in got.items()} == {
        0: [0, 1, 2],
        1: [0, 1, 2],
    }
    assert positions == [3, 3]


def test_fail_mode_names_the_partition_and_offset() -> None:
    poison.install("fail")
    data = raw_batch([GOOD, GOOD, POISON, GOOD])
    with pytest.raises(poison.PoisonRecordError, match="outputs partition 0 at offset 2"):
        _records(data)
    # Below the fetch offset (the group's offset was reset past it): skipped, as aiokafka
    # skips every record of a batch below the fetch offset.
    assert [r.offset for r in _records(data, fetch_offset=3)] == [3]


def test_original_headers_carry_a_bad_name_as_bytes() -> None:
    bad = BAD_NAME.decode("utf-8", "surrogateescape")
    record = SimpleNamespace(headers=(("a", b"1"), (bad, None), ("été", b"2"), ("b", None)))
    assert headers.original_headers(record) == [
        ("a", b"1"),
        (headers.DLQ_HEADER_KEY, BAD_NAME),
        (headers.DLQ_HEADER_VALUE, b""),
        ("été", b"2"),  # non-ASCII but UTF-8: a valid name, kept
        ("b", b""),
    ]


def test_install_replaces_what_aiokafka_fetcher_builds_fetches_with() -> None:
    """Checked against aiokafka's source, so a release that builds fetched records some other
    way fails here rather than silently bypassing the tolerant path."""
    source = inspect.getsource(aiokafka_fetcher.Fetcher)
    assert "MemoryRecords(part_data[-1])" in source
    assert "PartitionRecords(" in source
    poison.install("deadletter")
    poison.install("deadletter")
    assert aiokafka_fetcher.MemoryRecords is poison.TolerantRecords
    assert aiokafka_fetcher.PartitionRecords is poison._Partition
    assert poison.TolerantRecords.mode == "deadletter"


def _recrc(batch: bytearray) -> None:
    struct.pack_into(">I", batch, 17, calc_crc32c(bytes(batch[21:])))
