"""The records the gateway writes, each built in one place.

Routing, the decision applier and the SLA sweeper all write holds, review tasks and audit
events; routing writes dead letters and the applier training records. Their formats are the
gateway's wire contract with reviewers' tools, consumers and auditors (docs/review.md,
docs/dead-letters.md), so each has one builder here, and a held item's metadata is the typed
``models.HoldMeta``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hitl_gateway import __version__, headers
from hitl_gateway.audit import AuditChain
from hitl_gateway.codec import read_json
from hitl_gateway.models import HoldMeta, InputRecord, Route
from hitl_gateway.policy.engine import UNASSIGNED, Decision
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
    return Outgoing(
        topic, value, meta.item_id.encode(), hold_headers, partition=partition, hold=meta
    )


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


def checkpoint_record(topic: str, chain: AuditChain, now_ms: int) -> Outgoing | None:
    """The chain's checkpoint, if one is due, for the transaction that is about to commit
    the events it vouches for (on the chain's own audit partition)."""
    sealed = chain.checkpoint(now_ms)
    if sealed is None:
        return None
    key = f"checkpoint-{chain.partition}".encode()
    return Outgoing(topic, sealed, key, [], partition=chain.partition)


# Room for a record's framing in its batch (lengths, attributes, the batch header).
_FRAMING_BYTES = 512
# A dead letter's message names the field, never quotes a payload at length.
MAX_MESSAGE_CHARS = 2_000


def wire_size(o: Outgoing) -> int:
    """About what ``o`` weighs in a record batch (a slight overestimate)."""
    named = sum(len(k.encode("utf-8", "surrogateescape")) + len(v) + 10 for k, v in o.headers)
    return len(o.value or b"") + len(o.key or b"") + named + _FRAMING_BYTES


def oversized(outgoing: Sequence[Outgoing], max_wire_bytes: int) -> Outgoing | None:
    """The first record the topics would refuse: writing it could never succeed, and a
    transaction retrying it would wedge its partition."""
    return next((o for o in outgoing if wire_size(o) > max_wire_bytes), None)


def dead_letter(
    topic: str,
    record: Any,
    reason: str,
    message: str,
    *,
    policy_set_version: str,
    gateway_version: bytes,
    max_wire_bytes: int,
) -> Outgoing:
    """The input record as it came (key, value, its own headers) plus why and where from
    (docs/dead-letters.md). It always fits: the message is cut at ``MAX_MESSAGE_CHARS``, and
    a value that would not fit with its headers (an unreadable batch's bytes, a record at the
    topic's own limit) is cut where it fits, the message saying how much was kept."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    value = record.value

    def build(value: bytes | None, message: str) -> Outgoing:
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

    letter = build(value, message)
    excess = wire_size(letter) - max_wire_bytes
    if value is not None and excess > 0:
        keep = max(0, len(value) - excess - 100)  # 100: the note below
        letter = build(value[:keep], f"{message} (the first {keep} of {len(value)} bytes kept)")
    return letter


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


@dataclass(slots=True)
class Seen:
    """What a record's hold, review task and audit event all say about it."""

    content_hash: str
    reasons: list[dict[str, str]]
    source: dict[str, Any]

    @classmethod
    def of(cls, record: Any, value: bytes, d: Decision, content_hash: str | None = None) -> Seen:
        """For the item whose bytes are ``value``, routed by ``d`` from input ``record``."""
        reasons = [{"rule": r.rule, "detail": r.detail} for r in d.reasons]
        return cls(content_hash or content_hash_of(value), reasons, source_of(record))


def hold_meta(
    record: Any, item: InputRecord, d: Decision, seen: Seen, warn_share: float = 0.0
) -> HoldMeta:
    """A new hold's metadata, for input ``record`` routed by ``d``. ``warn_share``: the share
    of the SLA at which a warning is due (0: none); the first SLA check is then."""
    deadline = d.sla_deadline_ms
    first_check = deadline
    if deadline is not None and warn_share > 0:
        first_check = record.timestamp + int((deadline - record.timestamp) * warn_share)
    return HoldMeta(
        item_id=item.id,
        blocking=d.route is Route.HOLD,
        domain=d.domain,
        pool=d.pool or UNASSIGNED,  # a reviewed route always names one
        reviewers=d.reviewers,
        adjudicator_pool=d.adjudicator_pool,
        rubric=d.rubric,
        sla_deadline_ms=d.sla_deadline_ms,
        policy_version=d.policy_version,
        rule=d.rule,
        reasons=seen.reasons,
        content_hash=seen.content_hash,
        held_at_ms=record.timestamp,
        source=seen.source,
        producer=(item.metadata or {}).get("service"),
        next_check_ms=first_check,
        # For judge calibration: the human's grade is compared with the judge's on blind
        # reviews, per domain and stratum.
        blind=d.blind,
        judge=item.judge.model_dump(exclude_none=True) if item.judge else None,
        stratum=d.stratum,
        language=d.language,
        fallback=d.fallback,
        uncertainty=d.uncertainty,
    )


def routed_event(
    record: Any, item: InputRecord, d: Decision, policy_set_version: str, seen: Seen
) -> dict[str, Any]:
    """The audit event of a routing decision (before it is sealed)."""
    event = {
        "type": "routed",
        "item_id": item.id,
        "domain": d.domain,
        "route": d.route,  # a StrEnum: orjson writes its value
        "rule": d.rule,
        "reasons": seen.reasons,
        "pool": d.pool,
        "policy_version": d.policy_version,
        "policy_set_version": policy_set_version,
        "content_hash": seen.content_hash,
        "source": seen.source,
        "at_ms": record.timestamp,
        "gateway_version": __version__,
    }
    return event


def input_weight(record: Any) -> int:
    """An input record's value and header bytes."""
    named = sum(len(k) + len(v or b"") for k, v in record.headers) if record.headers else 0
    return len(record.value or b"") + named


def content_hash_of(value: bytes) -> str:
    return "sha256:" + hashlib.sha256(value).hexdigest()
