"""The review rules a domain policy can hold, in the engine's precedence order.

Every rule sends the items it selects to a reviewer pool with an SLA, and may ask for
several reviewers (consensus, with an adjudicator pool for disagreements) and declare an
escalation chain; a rule that declares none inherits ``review_defaults.escalation`` from
``routing.yaml``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from hitl_gateway.policy.fields import Duration, Fraction, Model, Name, check_record_path


class ReviewAction(StrEnum):
    HOLD = "hold"  # not delivered until approved
    DELIVER_AND_REVIEW = "deliver_and_review"  # delivered now, reviewed after


class Escalation(Model):
    after: Duration = Field(description="time past the SLA deadline")
    pool: Name
    alert: bool = True


class Quota(Model):
    count: int = Field(ge=1)
    window: Duration


# The rules (by their policy key) whose pool's skill outranks the record's language when no
# pool has both: expert review (the rule named experts on purpose). ``languages.skill_first``
# changes the list per policy.
RuleName = Literal[
    "mandatory_review", "red_team", "pre_launch", "confidence_cascade", "active_learning",
    "sampling", "deferred_review",
]  # fmt: skip
SKILL_FIRST_DEFAULT: tuple[RuleName, ...] = ("mandatory_review", "red_team", "pre_launch")


class Reviewed(Model):
    """What every rule shares: who reviews, how many, by when, and where it goes past that."""

    pool: Name
    sla: Duration
    rubric: str | None = None
    reviewers: int = Field(default=1, ge=1, le=10, description="distinct reviewers per item")
    adjudicator_pool: Name | None = None
    expected_disagreement: Fraction = Field(
        default=0.1, description="share of multi-reviewer items sent to adjudication (planner)"
    )
    escalation: tuple[Escalation, ...] | None = Field(
        default=None, description="steps past the SLA; absent: routing.yaml's review_defaults"
    )

    @model_validator(mode="after")
    def _adjudicator(self) -> Reviewed:
        if self.reviewers > 1 and self.adjudicator_pool is None:
            raise ValueError("reviewers > 1 needs an adjudicator_pool for disagreements")
        return self


class MandatoryReview(Reviewed):
    """Every output is held until the required number of reviewers approve it."""


class ConfidenceCascade(Reviewed):
    """Low confidence (or a poor judge verdict) goes to a human."""

    below: Fraction | None = Field(default=None, description="confidence threshold")
    judge_score_below: float | None = None
    judge_grades: tuple[str, ...] = ()
    missing_confidence: Literal["review", "pass"] = "review"
    action: ReviewAction = ReviewAction.HOLD

    @model_validator(mode="after")
    def _some_trigger(self) -> ConfidenceCascade:
        if self.below is None and self.judge_score_below is None and not self.judge_grades:
            raise ValueError("set at least one of below, judge_score_below, judge_grades")
        return self


class Sampling(Reviewed):
    """Periodic review of production traffic: drift detection and judge calibration."""

    rate: Fraction | None = None
    quota: Quota | None = None
    stratify_by: tuple[str, ...] = ()
    strata: int = Field(default=1, ge=1, le=1_000, description="expected number of strata")
    blind: bool = True
    sla: Duration = 7 * 86_400.0

    @model_validator(mode="after")
    def _rate_or_quota(self) -> Sampling:
        if (self.rate is None) == (self.quota is None):
            raise ValueError("set exactly one of rate or quota")
        if self.stratify_by and self.quota is None:
            raise ValueError("stratify_by needs a quota (a rate samples every stratum alike)")
        for key in self.stratify_by:
            check_record_path(key)
        return self


class ActiveLearning(Reviewed):
    """Label the uncertain cases within a budget; as it runs low, only the least confident."""

    band: tuple[Fraction, Fraction] = Field(description="confidence range counted as uncertain")
    boundary: Fraction | None = Field(
        default=None,
        description="the model's decision boundary: uncertainty is nearness to it "
        "(absent: the least confident, at the band's bottom, is the most uncertain)",
    )
    budget: Quota
    sla: Duration = 7 * 86_400.0

    @model_validator(mode="after")
    def _band(self) -> ActiveLearning:
        low, high = self.band
        if not low < high:
            raise ValueError(f"band must be [low, high] with low < high, got {list(self.band)}")
        if self.boundary is not None and not low <= self.boundary <= high:
            raise ValueError(f"boundary {self.boundary} must lie in the band {list(self.band)}")
        return self

    def uncertainty(self, confidence: float) -> float:
        """How much a case in the band is worth labelling: 1 most, 0 least. At the bottom of
        the band (least confident), or at the ``boundary`` when one is declared."""
        low, high = self.band
        if self.boundary is None:
            return (high - confidence) / (high - low)
        reach = max(self.boundary - low, high - self.boundary)
        return 1.0 - abs(confidence - self.boundary) / reach


class LanguageRouting(Model):
    """Native-speaker pools per language, the pool for a language no pool speaks, and which
    rules put their pool's skill before the record's language when no pool has both."""

    pools: dict[str, Name] = Field(default_factory=dict, description="BCP 47 language -> pool")
    fallback: Name | None = Field(
        default=None, description="no pool speaks the language: absent, routing.yaml's default"
    )
    skill_first: tuple[RuleName, ...] = SKILL_FIRST_DEFAULT

    @model_validator(mode="after")
    def _no_unassigned(self) -> LanguageRouting:
        if self.fallback == "hold_unassigned":
            raise ValueError(
                "fallback 'hold_unassigned' is no longer accepted: items held there had no way"
                " out; name a pool that serves any language (or set review_defaults."
                "fallback_pool in routing.yaml)"
            )
        return self


class FullReviewSample(Reviewed):
    """Send all of an initial sample to full review (pre-launch, red team)."""

    models: tuple[str, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict, description="tag(s) that select it")
    first: int | None = Field(default=None, ge=1, description="the first N records of each model")
    action: ReviewAction = ReviewAction.HOLD

    @model_validator(mode="after")
    def _selector(self) -> FullReviewSample:
        if not self.models and not self.metadata:
            raise ValueError("select records by models and/or metadata tags")
        return self


class DeferredReview(Reviewed):
    """Fast-moving teams: deliver everything now, queue a sample for review later."""

    rate: Fraction
    sla: Duration = 14 * 86_400.0
