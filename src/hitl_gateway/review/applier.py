"""Stage 2 for decisions: one partition's decision records -> the records they produce.

The HTTP API and the decisions topic share this path: the API publishes to the decisions
topic, on the partition of the item's hold. A decision found on another partition is
forwarded there. Outcomes (see review/state.py):

- terminal: delivered (approve: the original bytes; edit: the edited output) or blocked
  (reject), a training record, the hold's tombstone, an audit event;
- a vote short of consensus, or a disagreement sent to adjudication: a hold update (and a
  review task for the adjudicator), an audit event;
- a refusal: an audit event, and the result the API reports.

Everything for one batch commits in the partition's transaction with the decision offsets;
the index and the results follow the commit.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pydantic import ValidationError

from hitl_gateway import __version__, headers
from hitl_gateway.audit import AuditChain
from hitl_gateway.calibration.store import CalibrationStore
from hitl_gateway.codec import read_json
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold, ResultKey
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import (
    audit_event,
    hold_record,
    original_ref,
    review_task,
    source_of,
    training_record,
)
from hitl_gateway.poison import poisoned
from hitl_gateway.policy.rubrics import grade_problem
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review import stop_switch
from hitl_gateway.review.auth import ReviewerLookup
from hitl_gateway.review.batch import Applied, Batch
from hitl_gateway.review.events import (
    decision_event,
    refused_event,
    refused_result,
    result_key_of,
    result_of,
)
from hitl_gateway.review.learning import Learning
from hitl_gateway.review.reassign import Reassigner, is_command
from hitl_gateway.review.signatures import Checked, DecisionSignatures
from hitl_gateway.review.state import (
    ClosedBy,
    DecisionRequest,
    Hold,
    Outcome,
    Refusal,
    edited_value,
    evaluate,
    first_error,
    hold_of,
    malformed_key,
    parse_decision,
    refuse,
)
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing
from hitl_gateway.stopswitch import SwitchEvent
from hitl_gateway.training import example
from hitl_gateway.verdicts import TERMINAL_STATE, Verdict


class DecisionApplier:
    def __init__(
        self,
        topics: TopicSettings,
        index: HoldIndex,
        reviewers: ReviewerLookup,
        policies: PolicyStore,
        calibration: CalibrationStore,
        *,
        max_record_bytes: int,
        reassign_chunk: int = 200,
        signatures: DecisionSignatures | None = None,
    ) -> None:
        """``signatures``: check decisions' signatures (None: decision signing is off)."""
        self._max_bytes = max_record_bytes
        self._signatures = signatures
        self._topics = topics
        self._index = index
        self._reviewers = reviewers
        self._policies = policies
        self._learning = Learning(topics, policies, calibration, max_record_bytes)
        self._reassigner = Reassigner(topics, index, reviewers, policies, reassign_chunk)
        self._switcher = stop_switch.Switcher(topics, reviewers, policies)
        self._version = __version__.encode()

    async def apply(
        self,
        records: list[Any],
        partition: int,
        chain: AuditChain,
        *,
        switches: list[SwitchEvent] | None = None,
        switch_offset: int = 0,
    ) -> Applied:
        """``switches``: the partition's stop switch events; ``switch_offset``: the input
        offset this batch's transaction commits up to, where a switch command takes effect."""
        out = Applied()
        b = Batch(out, chain, partition, switches=switches or [], switch_offset=switch_offset)
        # Holds as this batch has left them: later decisions in the batch see earlier ones.
        overlay: dict[str, IndexedHold | ClosedBy] = {}
        for record in records:
            b.record = record
            b.signer = None
            if await self._not_a_decision(b, overlay):  # poison, or an operator's command
                continue
            checked = await self._checked(record)
            request = self._request(b, checked)
            if request is None:  # refused: malformed, or a bad signature
                continue
            current = overlay.get(request.item_id) or await self._index.get(request.item_id)
            if isinstance(current, IndexedHold) and current.partition != partition:
                out.outgoing.append(  # the API or a tool sent it to the wrong partition
                    Outgoing(self._topics.review_decisions, record.value, record.key,
                             self._forwarded_headers(record, checked), partition=current.partition)
                )  # fmt: skip
                continue
            if not self._signed_enough(b, request, checked, current):
                continue
            closed_by = current if isinstance(current, ClosedBy) else None  # in this batch
            if current is None:  # not held: closed earlier, or never held
                closed_by = await self._index.closed_by(request.item_id)
            hold = hold_of(current.meta) if isinstance(current, IndexedHold) else None
            # The reviewers file's, or an OIDC reviewer as their token granted when the API
            # published this (review/identities.py).
            reviewer = await self._reviewers.find(request.reviewer, record.timestamp)
            outcome = evaluate(
                hold, request, reviewer, now_ms=record.timestamp, closed_by=closed_by
            )
            if outcome.refusal is None and not outcome.duplicate:
                assert isinstance(current, IndexedHold)
                outcome = self._fits(current, request) or outcome
            if outcome.refusal is not None:
                self._refused(b, request, result_key_of(request), outcome)
                continue
            if outcome.duplicate:
                out.results[result_key_of(request)] = result_of(request, outcome, "duplicate")
                continue
            assert isinstance(current, IndexedHold)
            if outcome.terminal is not None:
                assert hold is not None
                overlay[request.item_id] = ClosedBy(request.decision_id, request.reviewer)
                self._close(b, current, request, outcome)
                await self._learning.record(b, current, hold, request, outcome)
            else:
                assert outcome.hold is not None
                updated = self._updated(current, outcome.hold)
                overlay[request.item_id] = updated
                self._progress(b, updated, request, outcome)
        return out

    async def _not_a_decision(self, b: Batch, overlay: dict[str, IndexedHold | ClosedBy]) -> bool:
        """Handle a record that is no reviewer's decision; False for one that may be.

        A header name that is not UTF-8 (it could not even be forwarded), or an unreadable
        batch's stand-in (poison.py), is refused like any malformed decision; an operator's
        command (reassign.py, stop_switch.py) is applied as one."""
        fault = poisoned(b.record)
        if fault is not None:
            outcome = refuse(Refusal.MALFORMED, fault.message)
            self._refused(b, None, malformed_key(b.record.value), outcome)
            return True
        if is_command(b.record):
            await self._reassigner.apply(b, overlay)
            return True
        if stop_switch.is_command(b.record):
            await self._switcher.apply(b)
            return True
        return False

    def _request(self, b: Batch, checked: Checked | None) -> DecisionRequest | None:
        """The decision the record asks for; None when it is refused (and audited) as
        malformed or for its signature."""
        try:
            request = parse_decision(b.record.value)
        except ValueError as exc:
            message = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            self._refused(
                b, None, malformed_key(b.record.value), refuse(Refusal.MALFORMED, message)
            )
            return None
        if checked is not None and checked.problem is not None:
            # No result is filed: a forged record must not answer for a genuine decision.
            outcome = refuse(Refusal.BAD_SIGNATURE, checked.problem)
            self._refused(b, request, result_key_of(request), outcome, file_result=False)
            return None
        return request

    # -- signatures (review/signatures.py) ---------------------------------------------------

    def _signed_enough(
        self,
        b: Batch,
        request: DecisionRequest,
        checked: Checked | None,
        current: IndexedHold | ClosedBy | None,
    ) -> bool:
        """False when an unsigned decision is refused (and audited); notes the signer."""
        if checked is None:  # signing is off
            return True
        if checked.signer is None and not self._accepts_unsigned(current):
            outcome = refuse(Refusal.UNSIGNED, self._unsigned_message(current))
            self._refused(b, request, result_key_of(request), outcome, file_result=False)
            return False
        b.signer = checked.signer.signer if checked.signer else "unsigned"
        return True

    async def _checked(self, record: Any) -> Checked | None:
        if self._signatures is None:
            return None
        return await self._signatures.check(record, int(time.time() * 1000))

    def _forwarded_headers(self, record: Any, checked: Checked | None) -> list[tuple[str, bytes]]:
        if self._signatures is None or checked is None:
            return list(record.headers or ())
        return self._signatures.forwarded(record, checked, int(time.time() * 1000))

    def _accepts_unsigned(self, current: IndexedHold | ClosedBy | None) -> bool:
        """An unsigned decision counts only on a held item whose domain's policy accepts
        them (an item no longer held has no domain to ask)."""
        if not isinstance(current, IndexedHold):
            return False
        loaded = self._policies.current.policies.get(current.meta.domain)
        return loaded is not None and loaded.policy.unsigned_decisions == "accept"

    @staticmethod
    def _unsigned_message(current: IndexedHold | ClosedBy | None) -> str:
        if isinstance(current, IndexedHold):
            return (
                f"the decision is not signed, and domain {current.meta.domain}'s policy does"
                " not accept unsigned decisions (unsigned_decisions: accept)"
            )
        return "the decision is not signed (and names no held item whose policy could accept it)"

    def _fits(self, held: IndexedHold, request: DecisionRequest) -> Outcome | None:
        """Grades that do not fit the item's rubric are refused (422, naming the dimension).
        An edit whose release would exceed the record limit can never be written: refused
        here (413), before it enters a transaction, instead of failing every retry of it."""
        rubric = held.meta.rubric or ""
        declared = self._policies.current.routing.rubrics.get(rubric)
        problem = grade_problem(request.grades, rubric, declared)
        if problem is not None:
            return refuse(Refusal.MALFORMED, problem)
        if not request.edited_output:
            return None
        size = len(edited_value(held.value, request.edited_output))
        if size <= self._max_bytes:
            return None
        message = f"the edited record would be {size} bytes, limit {self._max_bytes}"
        return refuse(Refusal.TOO_LARGE, message)

    # -- outcomes --------------------------------------------------------------------------

    def _close(
        self,
        b: Batch,
        held: IndexedHold,
        request: DecisionRequest,
        outcome: Outcome,
    ) -> None:
        out, record, partition = b.out, b.record, b.partition
        verdict = outcome.terminal
        assert verdict is not None
        assert outcome.final_vote is not None
        meta = held.meta
        state = TERMINAL_STATE[verdict]
        base = [(k, v) for k, v in held.headers if k != headers.ROUTE]
        base += [
            (headers.ROUTE, state.encode()),
            (headers.DECISION_ID, request.decision_id.encode()),
        ]
        original = read_json(held.value)
        gold = meta.gold
        if gold:
            pass  # a known-answer item: it measures the reviewer, nothing is released
        elif not meta.blocking:
            pass  # delivered when routed: the review yields labels (training), not a release
        elif verdict is Verdict.REJECT:
            reason = (request.reason or "rejected by reviewer").encode()
            out.outgoing.append(
                Outgoing(
                    self._topics.blocked,
                    held.value,
                    held.key,
                    [*base, (headers.REJECT_REASON, reason)],
                )
            )
        elif verdict is Verdict.EDIT:
            edited = edited_value(held.value, outcome.final_vote.edited_output)
            out.outgoing.append(Outgoing(self._topics.delivered, edited, held.key, base))
        else:
            out.outgoing.append(Outgoing(self._topics.delivered, held.value, held.key, base))
        training = example(
            "review",
            meta,
            original,
            request,
            decided_at_ms=record.timestamp,
            reviewer_identity=self._reviewer_identity(meta.domain),
            verdict=verdict,
            edited_output=outcome.final_vote.edited_output,
        )
        if not gold:
            out.outgoing.append(
                training_record(
                    self._topics.training,
                    training,
                    meta.item_id,
                    self._max_bytes,
                    ("input", original_ref(meta)),
                    ("original_output", original_ref(meta)),
                    ("edited_output", source_of(record)),  # the decision record carries it
                )
            )
        out.outgoing.append(
            Outgoing(
                self._topics.holds,
                None,
                meta.item_id.encode(),
                [  # which decision closed it, and whose
                    (headers.DECISION_ID, request.decision_id.encode()),
                    (headers.DECISION_REVIEWER, request.reviewer.encode()),
                ],
                partition=partition,
            )
        )
        self._audit(b, "decided", meta, request, state=state)
        out.results[result_key_of(request)] = result_of(request, outcome, state)
        out.verdicts.append((meta.pool, verdict.value, "applied"))
        latency = max(0.0, (record.timestamp - meta.held_at_ms) / 1000)
        out.latencies_s.append((meta.pool, verdict.value, latency))

    def _reviewer_identity(self, domain: str) -> bool:
        loaded = self._policies.current.policy_for(domain)
        return loaded is not None and loaded.policy.training.reviewer_identity

    def _progress(
        self,
        b: Batch,
        held: IndexedHold,
        request: DecisionRequest,
        outcome: Outcome,
    ) -> None:
        out, record, partition = b.out, b.record, b.partition
        meta = held.meta
        out.outgoing.append(
            hold_record(
                self._topics.holds, meta, held.value, held.key, held.headers, partition=partition
            )
        )
        event = "adjudication_requested" if outcome.escalated_to_adjudication else "vote_recorded"
        if outcome.escalated_to_adjudication:
            reasons = [{"rule": "adjudication", "detail": outcome.message}]
            out.outgoing.append(
                review_task(self._topics.review_tasks, meta, held.value, rule="adjudication",
                            reasons=reasons, created_at_ms=record.timestamp)
            )  # fmt: skip
        self._audit(b, event, meta, request, state="pending")
        out.results[result_key_of(request)] = result_of(request, outcome, "pending")
        out.verdicts.append((meta.pool, request.verdict.value, "recorded"))

    def _updated(self, held: IndexedHold, hold: Hold) -> IndexedHold:
        meta = dataclasses.replace(held.meta, votes=[v.as_json() for v in hold.votes])
        meta.stage = hold.stage
        if hold.stage == "adjudication" and hold.adjudicator_pool:
            meta.review_pool = meta.review_pool or meta.pool
            meta.pool = hold.adjudicator_pool
        return IndexedHold(meta, held.value, held.key, held.headers, held.partition)

    def _refused(
        self,
        b: Batch,
        request: DecisionRequest | None,
        key: ResultKey | None,
        outcome: Outcome,
        *,
        file_result: bool = True,
    ) -> None:
        """``key``: where the result goes (None: the record names no item, reviewer and
        decision id to file it under; the audit event still records the refusal)."""
        assert outcome.refusal is not None
        event = refused_event(b.record, request, key, outcome)
        b.out.outgoing.append(self._sealed(b, event, key[0] if key else ""))
        if key and file_result:
            b.out.results[key] = refused_result(key, outcome)
        b.out.refusals.append(outcome.refusal.value)

    def _audit(
        self, b: Batch, kind: str, meta: HoldMeta, request: DecisionRequest, *, state: str
    ) -> None:
        event = decision_event(b.record, kind, meta, request, state)
        if b.signer is not None:
            event["signer"] = b.signer  # the key that signed it, or "unsigned" (accepted)
        b.out.outgoing.append(self._sealed(b, event, meta.item_id))

    def _sealed(self, b: Batch, event: dict[str, Any], key: str) -> Outgoing:
        return audit_event(self._topics.audit, b.chain, event, key, partition=b.partition)
