"""A traffic profile: what the planner plans for. Per domain, records a day and how they
spread over confidence, languages, judge grades and tags (YAML, strict)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError

_SHARE_SLACK = 1e-9  # float sums of shares written as decimals


class Threshold(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    below: float = Field(gt=0, lt=1)
    share: float = Field(ge=0, le=1)


class DomainTraffic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    records_per_day: float = Field(ge=0)
    confidence: tuple[Threshold, ...] = ()  # share of traffic below each confidence value
    # Share of traffic per BCP 47 language; the rest carries no language (the rule's pool).
    languages: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    judge_grades: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, float] = Field(default_factory=dict)  # share with metadata KEY="true"

    @model_validator(mode="after")
    def _shares(self) -> DomainTraffic:
        total = sum(self.languages.values())
        if total > 1 + _SHARE_SLACK:
            raise ValueError(f"language shares add up to {total:g}, more than 1")
        return self

    def share_below(self, value: float) -> float:
        """The confidence CDF, linear between the given points, (0, 0) and (1, 1)."""
        points = [(0.0, 0.0), *sorted((t.below, t.share) for t in self.confidence), (1.0, 1.0)]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= value <= x1:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (value - x0) / (x1 - x0)
        return 1.0

    def language_shares(self) -> list[tuple[str | None, float]]:
        """(language, share) in the profile's order; None: the traffic with no language."""
        shares: list[tuple[str | None, float]] = [
            (lang, s) for lang, s in self.languages.items() if s > 0
        ]
        rest = 1.0 - sum(s for _, s in shares)
        return [*shares, (None, rest)] if rest > _SHARE_SLACK else shares


class TrafficProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    domains: dict[str, DomainTraffic]


def load_traffic(path: Path) -> TrafficProfile:
    try:
        return TrafficProfile.model_validate(yamlfile.load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid traffic profile: {yamlfile.describe(exc)}") from exc
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid traffic profile: {exc}") from exc
