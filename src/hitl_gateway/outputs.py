"""The records the gateway writes, each built in one place.

Routing, the decision applier and the SLA sweeper all write holds, review tasks and audit
events; routing writes dead letters and the applier training records. Their formats are the
gateway's wire contract with reviewers' tools, consumers and auditors (docs/review.md,
docs/dead-letters.md), so each has one builder here, and a held item's metadata is the typed
``models.HoldMeta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from hitl_gateway import headers
from hitl_gateway.audit import AuditChain
from hitl_gateway.codec import read_json
from hitl_gateway.models import HoldMeta
from hitl_gateway.sink import Headers, Outgoing

TASK_SCHEMA_VERSION = 1


def source_of(record: Any) -> dict[str, Any]:
    """Where a consumed record came from, as holds, tasks and audit events name it."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def hold_record(
    topic: str,
    meta: HoldMeta,
    value: bytes,
    key: bytes | None,
    base: Headers,
    *,
    partition: int,
) -> Outgoing:
    """A held item on the holds topic (compacted, keyed by item id): the record under review
    as its value, ``base`` headers (the input's own and the gateway's), the metadata as
    ``hitl.hold`` and the input's own key as ``hitl.hold.key``, so a release restores it."""
    hold_headers = [*base, (headers.HOLD, meta.to_json())]
    if key is not None:
        hold_headers.append((headers.HOLD_KEY, key))
    return Outgoing(topic, value, meta.item_id.encode(), hold_headers, partition=partition)


def blind_view(value: bytes) -> dict[str, Any]:
    """A held record as a blind reviewer sees it (task or API): without the judge's grade,
    which the hold keeps for calibration."""
    body: dict[str, Any] = read_json(value)
    body.pop("judge", None)
    return body


def embedded(value: bytes) -> Any:
    """A held record to embed in a task as it is, or as read again when it is not strict
    JSON (a hold written before the codec's strict contract): tasks are always JSON."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return read_json(value)
    return orjson.Fragment(value)


def review_task(
    topic: str,
    meta: HoldMeta,
    value: bytes,
    *,
    rule: str,
    reasons: list[dict[str, str]],
    created_at_ms: int,
    task_headers: Sequence[tuple[str, bytes]] = (),
    strict: bool = False,
) -> Outgoing:
    """A review task (``hitl.review.tasks``, keyed by item id) for a hold as it stands: its
    pool, stage and deadline; the record, without the judge's grade when the hold is blind.
    ``strict``: ``value`` is known to be strict JSON (routing's own records), embedded as is."""
    if meta.blind:
        shown: Any = blind_view(value)
    else:
        shown = orjson.Fragment(value) if strict else embedded(value)
    task = {
        "type": "review_task",
        "schema_version": TASK_SCHEMA_VERSION,
        "item_id": meta.item_id,
        "domain": meta.domain,
        "route": "hold" if meta.blocking else "deliver_and_review",
        "blocking": meta.blocking,
        "pool": meta.pool,
        "rule": rule,
        "reasons": reasons,
        "reviewers": 1 if meta.stage == "adjudication" else meta.reviewers,
        "adjudicator_pool": meta.adjudicator_pool,
        "rubric": meta.rubric,
        "deadline_ms": meta.sla_deadline_ms,
        "blind": meta.blind,
        "content_hash": meta.content_hash,
        "policy_version": meta.policy_version,
        "source": meta.source,
        "created_at_ms": created_at_ms,
        "record": shown,
    }
    return Outgoing(topic, orjson.dumps(task), meta.item_id.encode(), list(task_headers))


def audit_event(
    topic: str,
    chain: AuditChain,
    event: dict[str, Any],
    key: str,
    *,
    partition: int,
    event_headers: Sequence[tuple[str, bytes]] = (),
) -> Outgoing:
    """An event sealed on the partition's audit chain, on the audit partition with the input
    partition's number (its owner is the only writer of that chain)."""
    return Outgoing(
        topic, chain.seal(event), key.encode(), list(event_headers), partition=partition
    )


def dead_letter(
    topic: str,
    record: Any,
    reason: str,
    message: str,
    *,
    policy_set_version: str,
    gateway_version: bytes,
    max_bytes: int,
) -> Outgoing:
    """The input record as it came (key, value, its own headers) plus why and where from
    (docs/dead-letters.md). Only an unreadable batch's stand-in can exceed ``max_bytes``: its
    value is cut there, and the message says so."""
    value = record.value
    if value is not None and len(value) > max_bytes and reason == "unreadable":
        message += f" (the first {max_bytes} of {len(value)} bytes kept)"
        value = value[:max_bytes]
    return Outgoing(
        topic=topic,
        value=value,
        key=record.key,
        headers=[
            *headers.original_headers(record),
            (headers.DLQ_REASON, reason.encode()),
            (headers.DLQ_MESSAGE, message.encode()),
            (headers.POLICY_VERSION, policy_set_version.encode()),
            *headers.source_headers(record),
            (headers.GATEWAY_VERSION, gateway_version),
        ],
    )


def training_record(
    topic: str,
    doc: dict[str, Any],
    key: str,
    max_bytes: int,
    *fallbacks: tuple[str, dict[str, Any]],
) -> Outgoing:
    """A training example (``hitl.training``) within the record limit: while it does not fit,
    the next output named in ``fallbacks`` is replaced by a reference to where it is kept
    (``{field}_ref``): the original by its input record and content hash, an edit by the
    decision record that carries it. Everything else in these records is bounded by the
    decision's schema."""
    value = orjson.dumps(doc)
    for name, ref in fallbacks:
        if len(value) <= max_bytes:
            break
        doc[name] = None
        doc[f"{name}_ref"] = ref
        value = orjson.dumps(doc)
    return Outgoing(topic, value, key.encode(), [])


def original_ref(meta: HoldMeta) -> dict[str, Any]:
    """Where a held item's original output is kept: its input record, and its content hash."""
    return {**(meta.source or {}), "content_hash": meta.content_hash}
