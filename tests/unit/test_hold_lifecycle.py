"""A hypothesis state machine drives the pure hold life cycle with arbitrary sequences of
decisions and checks its invariants after every step."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hitl_gateway.review.auth import Reviewer
from hitl_gateway.review.state import (
    ClosedBy,
    DecisionRequest,
    Hold,
    Refusal,
    evaluate,
)
from hitl_gateway.verdicts import Verdict

HASH = "sha256:" + "a" * 64
REVIEWERS = {
    name: Reviewer(id=name, token_sha256="0" * 64, pools=tuple(pools))
    for name, pools in {
        "r1": ["review"],
        "r2": ["review"],
        "r3": ["review"],
        "adj": ["adjudicators"],
        "maker": ["review"],  # the service that produced the output
        "outsider": ["elsewhere"],
    }.items()
}


class HoldLifeCycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hold: Hold | None = Hold(
            item_id="x",
            domain="d",
            pool="review",
            reviewers=2,
            content_hash=HASH,
            adjudicator_pool="adjudicators",
            producer="maker",
        )
        self.closed_by: ClosedBy | None = None
        self.terminal_count = 0
        self.used: list[str] = []
        self.counter = 0

    @rule(
        who=st.sampled_from(sorted(REVIEWERS)),
        verdict=st.sampled_from(list(Verdict)),
        stale=st.booleans(),
        reuse=st.booleans(),
    )
    def decide(self, who: str, verdict: Verdict, stale: bool, reuse: bool) -> None:
        if reuse and self.used:
            decision_id = self.used[0]
        else:
            self.counter += 1
            decision_id = f"d{self.counter}"
            self.used.append(decision_id)
        request = DecisionRequest(
            decision_id=decision_id,
            item_id="x",
            reviewer=who,
            verdict=verdict,
            content_hash="sha256:" + "b" * 64 if stale else HASH,
            edited_output={"text": "edit"} if verdict is Verdict.EDIT else None,
        )
        before = self.hold
        outcome = evaluate(
            self.hold, request, REVIEWERS[who], now_ms=self.counter, closed_by=self.closed_by
        )
        if outcome.refusal is not None or outcome.duplicate:
            assert self.hold == before  # a refused or repeated request changes nothing
            if outcome.duplicate and before is None:
                # "Already applied" is told only to the reviewer whose decision closed it.
                assert self.closed_by == ClosedBy(decision_id, who)
            return
        # Applied: only a qualified, independent reviewer who saw the current content.
        assert not stale, "a stale content hash was accepted"
        assert who != "outsider", "a reviewer without the pool decided"
        assert who != "maker", "the producing service reviewed its own output"
        assert before is not None, "a closed item was decided again"
        if before.stage == "adjudication":
            assert who == "adj"
        if outcome.terminal is not None:
            self.terminal_count += 1
            self.hold = None
            self.closed_by = ClosedBy(decision_id, who)
        else:
            self.hold = outcome.hold

    @invariant()
    def closes_at_most_once(self) -> None:
        assert self.terminal_count <= 1

    @invariant()
    def open_hold_counts_each_reviewer_once(self) -> None:
        if self.hold is None:
            return
        review_round = self.hold.votes[: self.hold.reviewers]
        assert len({v.reviewer for v in review_round}) == len(review_round)
        assert len(review_round) <= self.hold.reviewers

    @invariant()
    def adjudication_only_after_disagreement(self) -> None:
        if self.hold is not None and self.hold.stage == "adjudication":
            verdicts = {(v.verdict, str(v.edited_output)) for v in self.hold.votes[:2]}
            assert len(verdicts) > 1

    @precondition(lambda self: self.hold is None)
    @rule()
    def closed_items_refuse_new_decisions(self) -> None:
        self.counter += 1
        request = DecisionRequest(
            decision_id=f"late{self.counter}", item_id="x", reviewer="r1",
            verdict=Verdict.APPROVE, content_hash=HASH,
        )  # fmt: skip
        outcome = evaluate(None, request, REVIEWERS["r1"], now_ms=0, closed_by=self.closed_by)
        assert outcome.refusal is Refusal.ALREADY_CLOSED


TestHoldLifeCycle = HoldLifeCycle.TestCase
TestHoldLifeCycle.settings = settings(max_examples=300, stateful_step_count=20, deadline=None)
