"""What a closed review teaches: the calibration windows (judge agreement, reviewer
consensus, gold items), a judge-training example where the human disagreed with the judge,
and an event (with its audit record) when a window's status changes."""

from __future__ import annotations

import orjson

from hitl_gateway import __version__
from hitl_gateway.calibration.evidence import evidence
from hitl_gateway.calibration.judge import Status
from hitl_gateway.calibration.store import CalibrationStore, Change
from hitl_gateway.codec import read_json
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.outputs import audit_event, original_ref, source_of, training_record
from hitl_gateway.policy.schema import Calibration
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.batch import Batch
from hitl_gateway.review.state import DecisionRequest, Hold, Outcome
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing
from hitl_gateway.training import example


class Learning:
    def __init__(
        self,
        topics: TopicSettings,
        policies: PolicyStore,
        calibration: CalibrationStore,
        max_record_bytes: int,
    ) -> None:
        self._topics = topics
        self._policies = policies
        self._calibration = calibration
        self._max_bytes = max_record_bytes

    async def record(
        self,
        b: Batch,
        held: IndexedHold,
        hold: Hold,
        request: DecisionRequest,
        outcome: Outcome,
    ) -> None:
        """Feed the closed review to the calibration windows; a disagreement with the judge
        becomes a judge-training example, a status change an event and an audit record."""
        out, record = b.out, b.record
        assert outcome.terminal is not None
        assert outcome.final_vote is not None
        meta = held.meta
        found = evidence(meta, (*hold.votes, outcome.final_vote), outcome.terminal)
        loaded = self._policies.current.policy_for(meta.domain)
        settings = loaded.policy.calibration if loaded else Calibration()
        rubrics = self._policies.current.routing.rubrics
        changes = await self._calibration.record(request.decision_id, found, settings, rubrics)
        pair = found.judge
        if pair is not None and not pair.agree:
            doc = example(
                "judge_disagreement",
                meta,
                read_json(held.value),
                request,
                decided_at_ms=record.timestamp,
                reviewer_identity=loaded is not None and loaded.policy.training.reviewer_identity,
                verdict=outcome.terminal,
                edited_output=outcome.final_vote.edited_output,
            )
            doc.update(stratum=pair.stratum, human_grade=pair.human)
            out.outgoing.append(
                training_record(
                    self._topics.training,
                    doc,
                    meta.item_id,
                    self._max_bytes,
                    ("input", original_ref(meta)),
                    ("original_output", original_ref(meta)),
                    ("edited_output", source_of(record)),
                )
            )
        for change in changes:
            kind = _event_type(change)
            if kind is None:
                continue
            event = {
                "type": kind,
                **change.labels,
                "status": change.status,
                "previous": change.previous or None,
                **{k: _number(v) for k, v in change.summary.items()},
                "decision_id": request.decision_id,
                "at_ms": record.timestamp,
                "gateway_version": __version__,
            }
            subject = "|".join(change.labels.values())
            out.outgoing.append(
                Outgoing(self._topics.calibration, orjson.dumps(event), subject.encode(), [])
            )
            out.outgoing.append(
                audit_event(self._topics.audit, b.chain, event, subject, partition=b.partition)
            )
            out.calibration_events.append(kind)


def _event_type(change: Change) -> str | None:
    """The events worth announcing: the judge needs recalibrating (or is fine again), a
    reviewer drifted from consensus (or is back)."""
    if change.kind == "judge":
        if change.status == Status.RECALIBRATE:
            return "recalibrate"
        if change.previous == Status.RECALIBRATE:
            return "calibration_restored"
    if change.kind == "consensus":
        if change.status == "flagged":
            return "reviewer_flagged"
        if change.previous == "flagged":
            return "reviewer_cleared"
    return None


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
