"""The policy language: reviewer pools and one policy per domain, as frozen pydantic models.

Unknown keys are errors, so a typo in a compliance file fails loudly with its path.
Durations are written ``90s``, ``30m``, ``4h``, ``2d`` or ``1w``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def _parse_duration(value: object) -> object:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"'{value}' is not a duration like 90s, 30m, 4h, 2d or 1w")
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    return value


Duration = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(s|m|h|d|w)\s*$"},
            ]
        }
    ),
]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- pools ------------------------------------------------------------------------------------


class Pool(_Model):
    """A team of reviewers: who they are, what they cost, how fast they go."""

    name: Name
    description: str = ""
    languages: tuple[Annotated[str, Field(min_length=2, max_length=35)], ...] = ()
    skills: tuple[str, ...] = ()
    cost_per_hour_usd: float = Field(gt=0, le=10_000)
    cases_per_hour: float = Field(gt=0, le=10_000)
    reviewers: int = Field(ge=1, description="headcount")
    hours_per_week: float = Field(gt=0, le=24 * 7 * 10_000, description="hours the pool has")

    @property
    def cases_per_week(self) -> float:
        return self.cases_per_hour * self.hours_per_week


class PoolFile(_Model):
    pools: tuple[Pool, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PoolFile:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        return self


# -- rules ------------------------------------------------------------------------------------


class ReviewAction(StrEnum):
    HOLD = "hold"  # not delivered until approved
    DELIVER_AND_REVIEW = "deliver_and_review"  # delivered now, reviewed after


class Escalation(_Model):
    after: Duration = Field(description="time past the SLA deadline")
    pool: Name
    alert: bool = True


class Quota(_Model):
    count: int = Field(ge=1)
    window: Duration


class MandatoryReview(_Model):
    """Every output is held until the required number of reviewers approve it."""

    pool: Name
    reviewers: int = Field(default=1, ge=1, le=10, description="distinct approvals needed")
    adjudicator_pool: Name | None = None
    sla: Duration
    escalation: tuple[Escalation, ...] = ()
    rubric: str | None = None

    @model_validator(mode="after")
    def _adjudicator(self) -> MandatoryReview:
        if self.reviewers > 1 and self.adjudicator_pool is None:
            raise ValueError("reviewers > 1 needs an adjudicator_pool for disagreements")
        return self


class ConfidenceCascade(_Model):
    """Low confidence (or a poor judge verdict) goes to a human."""

    below: Fraction | None = Field(default=None, description="confidence threshold")
    judge_score_below: float | None = None
    judge_grades: tuple[str, ...] = ()
    missing_confidence: Literal["review", "pass"] = "review"
    action: ReviewAction = ReviewAction.HOLD
    pool: Name
    sla: Duration
    rubric: str | None = None

    @model_validator(mode="after")
    def _some_trigger(self) -> ConfidenceCascade:
        if self.below is None and self.judge_score_below is None and not self.judge_grades:
            raise ValueError("set at least one of below, judge_score_below, judge_grades")
        return self


class Sampling(_Model):
    """Periodic review of production traffic: drift detection and judge calibration."""

    rate: Fraction | None = None
    quota: Quota | None = None
    stratify_by: tuple[str, ...] = ()
    strata: int = Field(default=1, ge=1, le=1_000, description="expected number of strata")
    blind: bool = True
    pool: Name
    sla: Duration = 7 * 86_400.0
    rubric: str | None = None

    @model_validator(mode="after")
    def _rate_or_quota(self) -> Sampling:
        if (self.rate is None) == (self.quota is None):
            raise ValueError("set exactly one of rate or quota")
        if self.stratify_by and self.quota is None:
            raise ValueError("stratify_by needs a quota (a rate samples every stratum alike)")
        for key in self.stratify_by:
            _check_record_path(key)
        return self


class ActiveLearning(_Model):
    """Label the uncertain cases within a budget; as it runs low, only the least confident."""

    band: tuple[Fraction, Fraction] = Field(description="confidence range counted as uncertain")
    budget: Quota
    pool: Name
    sla: Duration = 7 * 86_400.0
    rubric: str | None = None

    @model_validator(mode="after")
    def _band(self) -> ActiveLearning:
        low, high = self.band
        if not low < high:
            raise ValueError(f"band must be [low, high] with low < high, got {list(self.band)}")
        return self


class LanguageRouting(_Model):
    """Native-speaker pools per language; what to do when none speaks it."""

    pools: dict[str, Name] = Field(default_factory=dict, description="BCP 47 language -> pool")
    fallback: Literal["hold_unassigned"] | Name = "hold_unassigned"


class FullReviewSample(_Model):
    """Send all of an initial sample to full review (pre-launch, red team)."""

    models: tuple[str, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict, description="tag(s) that select it")
    first: int | None = Field(default=None, ge=1, description="the first N records of each model")
    pool: Name
    sla: Duration
    action: ReviewAction = ReviewAction.HOLD
    rubric: str | None = None

    @model_validator(mode="after")
    def _selector(self) -> FullReviewSample:
        if not self.models and not self.metadata:
            raise ValueError("select records by models and/or metadata tags")
        return self


class DeferredReview(_Model):
    """Fast-moving teams: deliver everything now, queue a sample for review later."""

    rate: Fraction
    pool: Name
    sla: Duration = 14 * 86_400.0


class Audit(_Model):
    level: Literal["full", "reviews"] = Field(
        default="full", description="full: every routing decision; reviews: only reviewed items"
    )
    retention_days: int = Field(default=2_555, ge=1, description="a hint for topic retention")


class GoldItems(_Model):
    """Items with known answers, slipped into the pool's queue to measure each reviewer."""

    file: str = Field(min_length=1, description="JSON Lines, relative to the policy directory")
    rate: Fraction = Field(description="gold items added per reviewed item of this domain")


class GoldItem(_Model):
    """One line of a gold file: a record with a known right answer."""

    id: Name
    record: dict[str, JsonValue] = Field(description="the output shown to the reviewer")
    verdict: Literal["approve", "edit", "reject"]
    grade: str | None = Field(default=None, max_length=64, description="the right grade, if any")


class Calibration(_Model):
    """Is the automated judge still calibrated, and do the reviewers agree?"""

    judge_threshold: Fraction = Field(
        default=0.85, description="judge-human agreement below this asks for recalibration"
    )
    min_cases: int = Field(default=200, ge=1, description="fewer cases: insufficient data")
    window: int = Field(default=1_000, ge=1, description="the last N blind comparisons")
    reviewer_threshold: Fraction = Field(
        default=0.8, description="a reviewer agreeing with consensus less often is flagged"
    )
    reviewer_min_ratings: int = Field(
        default=30, ge=1, description="consensus comparisons before a reviewer is judged"
    )
    gold: GoldItems | None = None

    @model_validator(mode="after")
    def _window(self) -> Calibration:
        if self.window < self.min_cases:
            raise ValueError(
                f"window ({self.window}) must be at least min_cases ({self.min_cases})"
            )
        if self.window < self.reviewer_min_ratings:
            raise ValueError(
                f"window ({self.window}) must be at least reviewer_min_ratings "
                f"({self.reviewer_min_ratings})"
            )
        return self


class DomainPolicy(_Model):
    domain: Name
    description: str = ""
    owner: str = ""
    seed: str = Field(default="", description="changes every sampling draw when changed")
    mandatory_review: MandatoryReview | None = None
    red_team: FullReviewSample | None = None
    pre_launch: FullReviewSample | None = None
    confidence_cascade: ConfidenceCascade | None = None
    active_learning: ActiveLearning | None = None
    sampling: Sampling | None = None
    deferred_review: DeferredReview | None = None
    languages: LanguageRouting = LanguageRouting()
    audit: Audit = Audit()
    calibration: Calibration = Calibration()
    expected_daily_volume: int | None = Field(
        default=None, ge=0, description="used by policy check to warn about pool capacity"
    )

    def pool_names(self) -> set[str]:
        names: set[str] = set()
        for rule in (
            self.mandatory_review,
            self.red_team,
            self.pre_launch,
            self.confidence_cascade,
            self.active_learning,
            self.sampling,
            self.deferred_review,
        ):
            if rule is not None:
                names.add(rule.pool)
        if self.mandatory_review is not None:
            if self.mandatory_review.adjudicator_pool:
                names.add(self.mandatory_review.adjudicator_pool)
            names |= {e.pool for e in self.mandatory_review.escalation}
        names |= set(self.languages.pools.values())
        if self.languages.fallback != "hold_unassigned":
            names.add(self.languages.fallback)
        return names


class UnknownDomains(_Model):
    """What happens to a record whose domain no policy names."""

    action: Literal["deadletter", "use_policy"] = "deadletter"
    policy: Name | None = None

    @model_validator(mode="after")
    def _policy(self) -> UnknownDomains:
        if (self.action == "use_policy") != (self.policy is not None):
            raise ValueError("action use_policy needs policy (and only it does)")
        return self


class RoutingFile(_Model):
    unknown_domains: UnknownDomains = UnknownDomains()


_RECORD_PATHS = ("language", "model", "judge.grade", "domain")


def _check_record_path(key: str) -> None:
    if key in _RECORD_PATHS or re.fullmatch(r"metadata\.[A-Za-z0-9_.-]+", key):
        return
    raise ValueError(f"cannot stratify by '{key}': use {', '.join(_RECORD_PATHS)} or metadata.KEY")
