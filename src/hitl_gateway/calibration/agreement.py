"""Reviewer agreement: which Krippendorff metric a window of rated units is measured with.

Pure. The verdict is a nominal label; numeric scores are interval data; grades of a rubric
declared ``scale: ordinal`` in routing.yaml are ranked by its grade list (best first), so a
disagreement between neighbouring grades weighs less than one between the extremes. Anything
else (an undeclared or nominal rubric, or a dimension whose ratings never use the rubric's
grades, such as an overall grade on the judge's own scale) stays nominal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from hitl_gateway.calibration.evidence import VERDICT
from hitl_gateway.calibration.stats import (
    krippendorff_alpha_interval,
    krippendorff_alpha_nominal,
    krippendorff_alpha_ordinal,
)
from hitl_gateway.policy.rubrics import as_grade
from hitl_gateway.policy.schema import Rubric

Units = Sequence[Sequence[Any]]  # per item, one rating per reviewer


@dataclass(frozen=True, slots=True)
class Agreement:
    metric: str  # nominal | ordinal | interval
    items: int  # units with two or more counted ratings: what alpha stands on
    alpha: float | None  # None when no unit has two counted ratings
    excluded: int = 0  # ratings left out: not one of the ordinal rubric's grades


def reviewer_agreement(units: Units, dimension: str, rubric: Rubric | None) -> Agreement:
    """Alpha over ``units`` (one rating per reviewer of an item) for one rubric dimension.

    On an ordinal rubric, a rating outside its grade list (a typo, a grade the rubric has
    since dropped) has no rank: it is left out and counted in ``excluded`` rather than
    guessed at, and a unit left with fewer than two ratings no longer counts in ``items``.
    """
    declared = rubric.dimensions.get(dimension) if rubric is not None else None
    if declared is None and all(
        isinstance(v, Real) and not isinstance(v, bool) for u in units for v in u
    ):
        return _measure("interval", units, krippendorff_alpha_interval)
    # A dimension the rubric declares is ranked by its own grades; any other by the overall.
    scale = declared.scale if declared is not None else rubric.scale if rubric else "nominal"
    order = declared.grades if declared is not None else rubric.grades if rubric else ()
    if scale != "ordinal" or dimension == VERDICT or not order:
        return _measure("nominal", units, krippendorff_alpha_nominal)
    grades = set(order)
    units = [
        [as_grade(v) if declared is not None and v is not None else v for v in u] for u in units
    ]
    if not any(v in grades for u in units for v in u):
        return _measure("nominal", units, krippendorff_alpha_nominal)
    kept = [[v for v in u if v in grades] for u in units]
    excluded = sum(len(u) for u in units) - sum(len(u) for u in kept)
    found = _measure("ordinal", kept, lambda us: krippendorff_alpha_ordinal(us, order))
    return Agreement(found.metric, found.items, found.alpha, excluded)


def _measure(metric: str, units: Units, alpha: Callable[[Units], float]) -> Agreement:
    items = sum(1 for u in units if sum(v is not None for v in u) >= 2)
    return Agreement(metric, items, alpha(units) if items else None)
