"""The policy language: reviewer pools, one policy per domain, and the routing defaults, as
frozen pydantic models (the rules themselves are in rules.py, the building blocks in
fields.py). Unknown keys are errors, so a typo in a compliance file fails loudly with its path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, JsonValue, model_validator

from hitl_gateway.policy.fields import Fraction, Model, Name
from hitl_gateway.policy.rules import (
    ActiveLearning,
    ConfidenceCascade,
    DeferredReview,
    Escalation,
    FullReviewSample,
    LanguageRouting,
    MandatoryReview,
    Reviewed,
    Sampling,
)

# -- pools ------------------------------------------------------------------------------------


class Pool(Model):
    """A team of reviewers: who they are, what they cost, how fast they go."""

    name: Name
    description: str = ""
    languages: tuple[
        Annotated[str, Field(pattern=r"^(\*|[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*)$")], ...
    ] = Field(default=(), description="BCP 47 tags; '*' serves every language")
    skills: tuple[str, ...] = ()
    cost_per_hour_usd: float = Field(gt=0, le=10_000)
    cases_per_hour: float = Field(gt=0, le=10_000)
    reviewers: int = Field(ge=1, description="headcount")
    hours_per_week: float = Field(gt=0, le=24 * 7 * 10_000, description="hours the pool has")
    agreement_target: Fraction = Field(
        default=0.8, description="Krippendorff's alpha among its reviewers below this alerts"
    )
    agreement_min_items: int = Field(
        default=50, ge=2, description="items with two or more ratings before alpha is judged"
    )
    queue_order: Literal["deadline", "uncertainty"] = Field(
        default="deadline",
        description="how reviewers' queues list items: nearest deadline, or most uncertain "
        "(active learning) first",
    )

    @property
    def cases_per_week(self) -> float:
        return self.cases_per_hour * self.hours_per_week


class PoolFile(Model):
    pools: tuple[Pool, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PoolFile:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        return self


class Audit(Model):
    level: Literal["full", "reviews"] = Field(
        default="full", description="full: every routing decision; reviews: only reviewed items"
    )
    retention_days: int = Field(default=2_555, ge=1, description="a hint for topic retention")


class Training(Model):
    """What the domain's training examples (hitl.training) may say about who reviewed."""

    reviewer_identity: bool = Field(
        default=False,
        description="name the reviewer in training examples (default: only their pool)",
    )


class GoldItems(Model):
    """Items with known answers, slipped into the pool's queue to measure each reviewer."""

    file: str = Field(min_length=1, description="JSON Lines, relative to the policy directory")
    rate: Fraction = Field(description="gold items added per reviewed item of this domain")


class GoldItem(Model):
    """One line of a gold file: a record with a known right answer."""

    id: Name
    record: dict[str, JsonValue] = Field(description="the output shown to the reviewer")
    verdict: Literal["approve", "edit", "reject"]
    grade: str | None = Field(default=None, max_length=64, description="the right grade, if any")


class Calibration(Model):
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


class DomainPolicy(Model):
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
    training: Training = Training()
    expected_daily_volume: int | None = Field(
        default=None, ge=0, description="used by policy check to warn about pool capacity"
    )
    unsigned_decisions: Literal["refuse", "accept"] = Field(
        default="refuse",
        description="with decision signing on, accept unsigned decisions on the decisions"
        " topic for this domain (a trusted unsigned source); refused by default",
    )

    def rules(self) -> Iterator[tuple[str, Reviewed]]:
        """The rules this policy declares, by policy key, in the engine's precedence order."""
        for name in RULE_ORDER:
            rule = getattr(self, name)
            if rule is not None:
                yield name, rule

    def rule(self, name: str | None) -> Reviewed | None:
        """A rule by its policy key (a hold's ``rule``); None for other names."""
        return getattr(self, name, None) if name in RULE_ORDER else None

    def pool_names(self) -> set[str]:
        names: set[str] = set()
        for _, rule in self.rules():
            names.add(rule.pool)
            if rule.adjudicator_pool:
                names.add(rule.adjudicator_pool)
            names |= {e.pool for e in rule.escalation or ()}
        names |= set(self.languages.pools.values())
        if self.languages.fallback is not None:
            names.add(self.languages.fallback)
        return names


RULE_ORDER = (
    "mandatory_review",
    "red_team",
    "pre_launch",
    "confidence_cascade",
    "active_learning",
    "sampling",
    "deferred_review",
)


class UnknownDomains(Model):
    """What happens to a record whose domain no policy names."""

    action: Literal["deadletter", "use_policy"] = "deadletter"
    policy: Name | None = None

    @model_validator(mode="after")
    def _policy(self) -> UnknownDomains:
        if (self.action == "use_policy") != (self.policy is not None):
            raise ValueError("action use_policy needs policy (and only it does)")
        return self


class Dimension(Model):
    """One thing a reviewer grades: its grades, best first (numbers written as strings, e.g.
    ``["5", "4", "3", "2", "1"]``), whether their order means anything, and what each means."""

    description: str = Field(default="", max_length=500)
    grades: tuple[str, ...] = Field(min_length=2, max_length=20)
    scale: Literal["ordinal", "nominal"] = "ordinal"
    definitions: dict[str, str] = Field(default_factory=dict, description="grade -> meaning")

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if len(set(self.grades)) != len(self.grades):
            raise ValueError(f"grades must be distinct, got {list(self.grades)}")
        unknown = sorted(set(self.definitions) - set(self.grades))
        if unknown:
            raise ValueError(f"definitions name grades it does not have: {', '.join(unknown)}")
        return self


class Rubric(Model):
    """A rubric: the one-page criteria reviewers read before they start, the dimensions they
    grade (each with its scale and grade definitions), an overall grade scale, the reasons a
    reviewer picks from when rejecting, and how long a careful review takes at least.

    Agreement on an ordinal scale counts A against B as a smaller disagreement than A against
    D (Krippendorff's ordinal alpha); on a nominal scale every difference is equal."""

    criteria: str = Field(default="", max_length=8_000, description="markdown")
    dimensions: dict[Name, Dimension] = Field(default_factory=dict)
    grades: tuple[str, ...] = Field(default=(), description="the overall grade, best first")
    scale: Literal["ordinal", "nominal"] = "ordinal"
    reject_reasons: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    min_review_seconds: float | None = Field(
        default=None, gt=0, description="faster than this per item is implausible (alert)"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Rubric:
        if len(set(self.grades)) != len(self.grades):
            raise ValueError(f"grades must be distinct, got {list(self.grades)}")
        if len(self.grades) == 1:
            raise ValueError("an overall grade scale needs at least two grades")
        return self


class ReviewDefaults(Model):
    """What every domain's review rules inherit unless they say otherwise."""

    fallback_pool: Name | None = Field(
        default=None, description="where an item goes when no pool speaks its language"
    )
    escalation: tuple[Escalation, ...] = Field(
        default=(), description="the escalation chain of a rule that declares none"
    )


class RoutingFile(Model):
    unknown_domains: UnknownDomains = UnknownDomains()
    review_defaults: ReviewDefaults = ReviewDefaults()
    rubrics: dict[Name, Rubric] = Field(default_factory=dict)
