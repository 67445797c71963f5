"""What the decision path writes besides outputs: the bodies of its audit events and the
results the API reports (pure; the applier seals and files them)."""

from __future__ import annotations

from typing import Any

from hitl_gateway import __version__
from hitl_gateway.index_entries import ResultKey
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import source_of
from hitl_gateway.review.signatures import signer_of
from hitl_gateway.review.state import DecisionRequest, Outcome, decision_id_of


def result_key_of(request: DecisionRequest) -> ResultKey:
    return (request.item_id, request.reviewer, request.decision_id)


def result_of(request: DecisionRequest, outcome: Outcome, state: str) -> dict[str, Any]:
    return {
        "decision_id": request.decision_id,
        "item_id": request.item_id,
        "reviewer": request.reviewer,
        "status": outcome.status,
        "refusal": outcome.refusal.value if outcome.refusal else None,
        "message": outcome.message,
        "state": state,
    }


def refused_result(key: ResultKey, outcome: Outcome) -> dict[str, Any]:
    assert outcome.refusal is not None
    return {
        "decision_id": key[2],
        "item_id": key[0],
        "reviewer": key[1],
        "status": outcome.status,
        "refusal": outcome.refusal.value,
        "message": outcome.message,
        "state": "refused",
    }


def refused_event(
    record: Any, request: DecisionRequest | None, key: ResultKey | None, outcome: Outcome
) -> dict[str, Any]:
    """A refused decision's audit event (``key`` None: the record names no item, reviewer
    and decision id; its decision id is read from the value where it can be)."""
    assert outcome.refusal is not None
    item_id, reviewer, decision_id = key if key else (None, None, decision_id_of(record.value))
    event: dict[str, Any] = {
        "type": "decision_refused",
        "decision_id": decision_id,
        "item_id": item_id,
        "reviewer": reviewer,
        "verdict": request.verdict.value if request else None,
        "refusal": outcome.refusal.value,
        "status": outcome.status,
        "message": outcome.message,
        "source": source_of(record),
        "at_ms": record.timestamp,
        "gateway_version": __version__,
    }
    signer = signer_of(record.headers)
    if signer is not None:
        event["signer"] = signer  # the key id the record names (checked or not)
    return event


def decision_event(
    record: Any, kind: str, meta: HoldMeta, request: DecisionRequest, state: str
) -> dict[str, Any]:
    """A counted decision's audit event: ``decided`` (terminal) or a vote's kind."""
    event = {
        "type": kind,
        "decision_id": request.decision_id,
        "item_id": meta.item_id,
        "domain": meta.domain,
        "pool": meta.pool,
        "reviewer": request.reviewer,
        "verdict": request.verdict.value,
        "state": state,
        "grades": request.grades,
        "content_hash": meta.content_hash,
        "policy_version": meta.policy_version,
        "source": source_of(record),
        "at_ms": record.timestamp,
        "gateway_version": __version__,
    }
    if meta.gold:
        event["gold"] = meta.gold  # a known-answer item: the reviewer was measured
    return event
