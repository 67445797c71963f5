"""The life cycle of a held item, as a pure state machine.

``Verdict``, ``Vote`` and ``TERMINAL_STATE`` live in the leaf module ``verdicts``: calibration
reads them too, without importing the review code.

pending --(N distinct agreeing votes)--> approved | edited | rejected
pending --(N votes that disagree)--> adjudication --(one adjudicator vote)--> terminal
Nothing but a qualified reviewer's vote closes a hold: no timer, no error path releases it.
Every request gets an ``Outcome``: applied, or refused with an HTTP-like status and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    model_validator,
)

from hitl_gateway.codec import MAX_DEPTH, depth, read_json
from hitl_gateway.models import HoldMeta
from hitl_gateway.review.auth import Reviewer
from hitl_gateway.verdicts import Verdict, Vote

# Rubric dimensions and their grades: bounded, so every record that carries them (audit
# events, training records) stays small whatever a decision sends.
MAX_GRADES = 50
GradeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
GradeValue = (
    Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, StringConstraints(max_length=256)]
)


class DecisionBody(BaseModel):
    """What a reviewer decides (the HTTP request body)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    verdict: Verdict
    content_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    edited_output: JsonValue = None
    reason: str | None = Field(default=None, max_length=2_000)
    grade: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="overall grade on the judge's scale: compared with the judge on blind reviews",
    )
    grades: dict[GradeName, GradeValue] = Field(
        default_factory=dict, max_length=MAX_GRADES, description="rubric dimension -> grade"
    )
    notes: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _edit_has_output(self) -> DecisionBody:
        check_edit(self.verdict, self.edited_output)
        return self


class DecisionRequest(DecisionBody):
    """A decision as the gateway applies it: from the API (reviewer from the token) or the
    decisions topic."""

    item_id: str = Field(min_length=1, max_length=4_096)
    reviewer: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")


def check_edit(verdict: Verdict, edited_output: object) -> None:
    """An edit carries the edited output; no other verdict does."""
    if verdict is Verdict.EDIT and edited_output is None:
        raise ValueError("an edit needs edited_output")
    if verdict is not Verdict.EDIT and edited_output is not None:
        raise ValueError("edited_output is only for verdict edit")
    if depth(edited_output) >= MAX_DEPTH:
        raise ValueError(f"edited_output nests deeper than {MAX_DEPTH - 1} levels")


def parse_decision(value: bytes | None) -> DecisionRequest:
    """A decision record from the decisions topic. Strict JSON, like every input (a NaN
    grade or edit is refused, never written as null). Raises ``ValueError`` (a pydantic
    ``ValidationError`` for the fields) with a message naming what is wrong."""
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the decision is not strict JSON: {exc}") from exc
    return DecisionRequest.model_validate(raw)


def edited_value(held_value: bytes, edited_output: object) -> bytes:
    """What an edit releases: the held record with its ``output`` replaced."""
    return orjson.dumps({**read_json(held_value), "output": edited_output})


@dataclass(frozen=True, slots=True)
class Hold:
    """What the life cycle needs to know about one held item."""

    item_id: str
    domain: str
    pool: str
    reviewers: int
    content_hash: str
    adjudicator_pool: str | None = None
    producer: str | None = None  # the service that produced the output
    stage: str = "review"  # review | adjudication
    votes: tuple[Vote, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ClosedBy:
    """The decision that closed an item, and its reviewer (unknown for items closed by
    versions that did not record it)."""

    decision_id: str
    reviewer: str | None

    @classmethod
    def parse(cls, marker: str) -> ClosedBy:
        decision_id, _, reviewer = marker.partition("\0")
        return cls(decision_id, reviewer or None)


class Refusal(StrEnum):
    UNKNOWN_ITEM = "unknown_item"  # 404
    ALREADY_CLOSED = "already_closed"  # 409
    NOT_ALLOWED = "not_allowed"  # 403
    SELF_APPROVAL = "self_approval"  # 403: the producing service reviewing its own output
    STALE_CONTENT = "stale_content"  # 409: the reviewer saw other content
    ALREADY_VOTED = "already_voted"  # 409: one reviewer counts once
    MALFORMED = "malformed"  # 422
    TOO_LARGE = "too_large"  # 413: what the decision would write exceeds the record limit
    BAD_SIGNATURE = "bad_signature"  # 401: altered, unknown key, expired, replayed
    UNSIGNED = "unsigned"  # 401: no signature, and the domain's policy does not accept that


STATUS = {
    Refusal.UNKNOWN_ITEM: 404,
    Refusal.ALREADY_CLOSED: 409,
    Refusal.NOT_ALLOWED: 403,
    Refusal.SELF_APPROVAL: 403,
    Refusal.STALE_CONTENT: 409,
    Refusal.ALREADY_VOTED: 409,
    Refusal.MALFORMED: 422,
    Refusal.TOO_LARGE: 413,
    Refusal.BAD_SIGNATURE: 401,
    Refusal.UNSIGNED: 401,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one request. ``hold`` is the new state when it stays open."""

    status: int
    refusal: Refusal | None = None
    message: str = ""
    hold: Hold | None = None
    terminal: Verdict | None = None
    final_vote: Vote | None = None
    escalated_to_adjudication: bool = False
    duplicate: bool = False


def refuse(refusal: Refusal, message: str) -> Outcome:
    return Outcome(STATUS[refusal], refusal, message)


def evaluate(
    hold: Hold | None,
    request: DecisionRequest,
    reviewer: Reviewer | None,
    *,
    now_ms: int,
    closed_by: ClosedBy | None = None,
) -> Outcome:
    """Apply ``request`` to ``hold``. ``closed_by``: the decision that closed the item; the
    same reviewer sending it again is told it was applied, nobody else is."""
    if hold is None:
        if closed_by is not None:
            if closed_by.decision_id == request.decision_id and closed_by.reviewer in (
                None,
                request.reviewer,
            ):
                return Outcome(200, message="already applied", duplicate=True)
            return refuse(Refusal.ALREADY_CLOSED, f"item {request.item_id} is already closed")
        return refuse(Refusal.UNKNOWN_ITEM, f"no held item {request.item_id}")
    if any(
        v.decision_id == request.decision_id and v.reviewer == request.reviewer for v in hold.votes
    ):
        return Outcome(200, message="already applied", hold=hold, duplicate=True)
    pool = hold.adjudicator_pool if hold.stage == "adjudication" else hold.pool
    if reviewer is None or not reviewer.may_review(pool or "", hold.domain):
        who = reviewer.id if reviewer else request.reviewer
        return refuse(Refusal.NOT_ALLOWED, f"{who} may not review pool {pool} in {hold.domain}")
    if hold.producer is not None and reviewer.id == hold.producer:
        return refuse(Refusal.SELF_APPROVAL, f"{reviewer.id} produced this output")
    if request.content_hash != hold.content_hash:
        return refuse(Refusal.STALE_CONTENT, "the content changed since the reviewer saw it")
    stage_votes = [v for v in hold.votes if _stage_of(hold, v) == hold.stage]
    if any(v.reviewer == reviewer.id for v in stage_votes):
        return refuse(Refusal.ALREADY_VOTED, f"{reviewer.id} already voted on this item")

    vote = Vote.cast(
        request.decision_id, reviewer.id, request.verdict, now_ms,
        edited_output=request.edited_output, grade=request.grade, grades=dict(request.grades),
    )  # fmt: skip
    votes = (*hold.votes, vote)
    if hold.stage == "adjudication" or hold.reviewers <= 1:
        return Outcome(200, terminal=vote.verdict, final_vote=vote)
    round_votes = [*stage_votes, vote]
    if len(round_votes) < hold.reviewers:
        return Outcome(202, message="vote recorded", hold=replace(hold, votes=votes))
    if _agree(round_votes):
        return Outcome(200, terminal=vote.verdict, final_vote=vote)
    return Outcome(
        202,
        message=f"reviewers disagree: sent to adjudicator pool {hold.adjudicator_pool}",
        hold=replace(hold, votes=votes, stage="adjudication"),
        escalated_to_adjudication=True,
    )


def _agree(votes: list[Vote]) -> bool:
    first = votes[0]
    return all(
        v.verdict == first.verdict
        and (v.verdict is not Verdict.EDIT or v.edit_digest == first.edit_digest)
        for v in votes
    )


def _stage_of(hold: Hold, vote: Vote) -> str:
    """Votes before the round completed belong to review; later ones to adjudication."""
    index = hold.votes.index(vote)
    return "review" if index < hold.reviewers else "adjudication"


def hold_of(meta: HoldMeta) -> Hold:
    """What the life cycle needs of a held item's metadata."""
    return Hold(
        item_id=meta.item_id,
        domain=meta.domain,
        pool=meta.pool,
        reviewers=meta.reviewers,
        content_hash=meta.content_hash,
        adjudicator_pool=meta.adjudicator_pool,
        producer=meta.producer,
        stage=meta.stage,
        votes=tuple(Vote.from_json(v) for v in meta.votes),
    )


def malformed_key(value: bytes | None) -> tuple[str, str, str] | None:
    """Where a malformed decision's refusal is filed: its item, reviewer and decision id,
    when the record names all three as strings (else the audit event is its only trace)."""
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    item_id, reviewer, decision_id = raw.get("item_id"), raw.get("reviewer"), decision_id_of(value)
    if (
        isinstance(item_id, str)
        and isinstance(reviewer, str)
        and item_id
        and reviewer
        and decision_id
    ):
        return (item_id, reviewer, decision_id)
    return None


def decision_id_of(value: bytes | None) -> str | None:
    try:
        raw = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    candidate = raw.get("decision_id") if isinstance(raw, dict) else None
    return candidate if isinstance(candidate, str) and 0 < len(candidate) <= 128 else None


def first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    path = ".".join(str(p) for p in err["loc"]) or "<decision>"
    return f"field '{path}': {err['msg']}"
