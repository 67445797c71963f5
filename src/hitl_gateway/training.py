"""What a closed review teaches a model: the training examples on ``hitl.training``.

Each example stands on its own (schema version 2, docs/training-data.md): what the model saw
(``input``, when the producer sent it), which model, how confident, the original output and
the reviewer's correction, the rubric grades, the pool that reviewed it (a reviewer's id
only where the domain's policy allows it), the policy version and the times. A trainer needs
no join back to the source topic.
"""

from __future__ import annotations

from typing import Any

from hitl_gateway.models import HoldMeta
from hitl_gateway.review.state import DecisionRequest
from hitl_gateway.verdicts import Verdict

SCHEMA_VERSION = 2

# Fields an example takes from the held record as the producer sent it.
_RECORD_TEXT = ("model", "model_version", "language", "created_at")


def _text(value: Any) -> str | None:
    """A bounded string field of the record, or None (absent, or not a short string)."""
    return value if isinstance(value, str) and len(value) <= 256 else None


def _confidence(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _metadata(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def example(
    kind: str,
    meta: HoldMeta,
    original: dict[str, Any],
    request: DecisionRequest,
    *,
    decided_at_ms: int,
    reviewer_identity: bool,
    verdict: Verdict | None = None,
    edited_output: Any = None,
) -> dict[str, Any]:
    """A training example of ``kind`` (``review`` or ``judge_disagreement``) for the hold
    ``meta`` whose record is ``original``, closed by ``request``. ``verdict`` and
    ``edited_output`` are the closing ones (after consensus: the agreed verdict, the closing
    vote's edit)."""
    closing = verdict if verdict is not None else request.verdict
    doc: dict[str, Any] = {
        "type": kind,
        "schema_version": SCHEMA_VERSION,
        "item_id": meta.item_id,
        "decision_id": request.decision_id,
        "domain": meta.domain,
        "rule": meta.rule,
        "blocking": meta.blocking,
        "verdict": closing.value,
        "input": original.get("input"),
        **{name: _text(original.get(name)) for name in _RECORD_TEXT},
        "confidence": _confidence(original.get("confidence")),
        "uncertainty": meta.uncertainty,
        "metadata": _metadata(original.get("metadata")),
        "original_output": original.get("output"),
        "edited_output": edited_output if closing is Verdict.EDIT else None,
        "reject_reason": request.reason if closing is Verdict.REJECT else None,
        "rubric": meta.rubric,
        "grade": request.grade,
        "grades": request.grades,
        "notes": request.notes,
        "judge": meta.judge,  # as validated when routed: bounded fields only
        "reviewer_pool": meta.pool,
        "reviewer": request.reviewer if reviewer_identity else None,
        "policy_version": meta.policy_version,
        "held_at_ms": meta.held_at_ms,
        "decided_at_ms": decided_at_ms,
    }
    return doc
