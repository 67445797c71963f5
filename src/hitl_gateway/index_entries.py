"""The hold index's entries, from holds-topic records (pure: no Redis here).

A hold record (value, the original key and headers, the hold metadata header) becomes an
``IndexedHold``; a tombstone becomes a removal naming the decision that closed the item.
``holds.HoldIndex`` stores them; recovery and the commit path compute them. A stop switch's
event (stopswitch.py) shares the topic: it is no hold, but the index keeps it too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from hitl_gateway import headers
from hitl_gateway.models import HoldMeta
from hitl_gateway.stopswitch import SWITCH_HEADER, SwitchEvent


@dataclass(frozen=True, slots=True)
class IndexedHold:
    meta: HoldMeta
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    # ``meta`` as JSON, when it is at hand as written to the holds topic (stored as is).
    meta_json: bytes | None = None


def indexed(
    value: bytes, hdrs: list[tuple[str, bytes]], partition: int, meta: HoldMeta | None = None
) -> IndexedHold:
    """An index entry from a hold record as it is on the holds topic (``meta``: its metadata
    as built, when at hand, instead of parsed back from the header)."""
    found = dict(hdrs)
    own = [(k, v) for k, v in hdrs if k not in (headers.HOLD, headers.HOLD_KEY)]
    meta_json = found[headers.HOLD]
    return IndexedHold(
        meta=meta if meta is not None else HoldMeta.from_json(meta_json),
        value=value,
        key=found.get(headers.HOLD_KEY),
        headers=own,
        partition=partition,
        meta_json=meta_json,
    )


# A decision's result is found by (item id, reviewer, decision id).
ResultKey = tuple[str, str, str]


def result_key(item_id: str, reviewer: str, decision_id: str) -> str:
    """The Redis key suffix of a result. Reviewer and decision ids never hold a NUL (their
    patterns forbid it), so the suffix is unambiguous even for an item id that does."""
    return f"{item_id}\0{reviewer}\0{decision_id}"


def index_changes(
    records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    partition: int,
    built: Sequence[HoldMeta | None] = (),
) -> tuple[list[IndexedHold], list[tuple[str, str, int]]]:
    """What the index must do for these holds-topic records (key, value, headers), in topic
    order: the last record per item wins, a hold (upsert) or a tombstone (removal, with the
    decision that closed it and its reviewer, as ``ClosedBy.parse`` reads them). ``built``:
    the records' metadata as built, where the caller has it (the records it just wrote)."""
    latest: dict[str, IndexedHold | str] = {}
    for n, (key, value, hdrs) in enumerate(records):
        if _is_switch(hdrs):
            continue
        item_id = (key or b"").decode()
        if value is None:
            found = dict(hdrs)
            marker = found.get(headers.DECISION_ID, b"closed").decode()
            reviewer = found.get(headers.DECISION_REVIEWER)
            latest[item_id] = f"{marker}\0{reviewer.decode()}" if reviewer else marker
        else:
            latest[item_id] = indexed(value, hdrs, partition, built[n] if built else None)
    upserts = [v for v in latest.values() if isinstance(v, IndexedHold)]
    removals = [(item, v, partition) for item, v in latest.items() if isinstance(v, str)]
    return upserts, removals


def _is_switch(hdrs: list[tuple[str, bytes]]) -> bool:
    return any(k == SWITCH_HEADER for k, _ in hdrs)


def switch_changes(
    records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> list[SwitchEvent]:
    """The stop switch events among these holds-topic records, in topic order."""
    return [
        SwitchEvent.model_validate_json(value)
        for _, value, hdrs in records
        if value is not None and _is_switch(hdrs)
    ]


def encode_headers(headers: list[tuple[str, bytes]]) -> bytes:
    return orjson.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in orjson.loads(raw)]
