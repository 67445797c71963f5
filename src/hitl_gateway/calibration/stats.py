"""Agreement statistics, pure functions.

- percent agreement and Cohen's kappa for two raters (human vs judge) on nominal grades;
- the Wilson score interval for a proportion (small samples, rates near 0 or 1);
- Krippendorff's alpha (nominal; ordinal for ranked grades; interval for numeric scores) for
  several reviewers per item with missing ratings. Alpha is chosen over Fleiss' kappa because
  review pools rarely give every item the same number of reviewers, and alpha handles any
  number of raters per item and missing data.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from itertools import permutations
from typing import Any

Z_95 = 1.959963984540054


def percent_agreement(pairs: Sequence[tuple[Hashable, Hashable]]) -> float:
    if not pairs:
        raise ValueError("no pairs")
    return sum(a == b for a, b in pairs) / len(pairs)


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float:
    """Cohen's kappa for two raters. 1.0 when both always give one and the same category."""
    if not pairs:
        raise ValueError("no pairs")
    n = len(pairs)
    observed = percent_agreement(pairs)
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in first.keys() | second.keys()) / (n * n)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for successes/n (95% by default)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exact at the ends (the closed form leaves floating-point residue there).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable | None]]) -> float:
    """Krippendorff's alpha for nominal data. ``units`` holds, per item, every reviewer's
    rating (None where a reviewer did not rate it). Items with fewer than two ratings do not
    count. 1.0 when the data show no variation at all."""
    return krippendorff_alpha(units, lambda a, b: 0.0 if a == b else 1.0)


def krippendorff_alpha_interval(units: Sequence[Sequence[float | None]]) -> float:
    """Krippendorff's alpha for interval data (numeric scores: squared differences)."""
    return krippendorff_alpha(units, lambda a, b: (float(a) - float(b)) ** 2)


def krippendorff_alpha_ordinal(
    units: Sequence[Sequence[Hashable | None]], order: Sequence[Hashable]
) -> float:
    """Krippendorff's alpha for ordinal data: grades ranked by ``order`` (best first or worst
    first, alpha is the same). The distance between two grades grows with how many pairable
    ratings lie between them, so A against B counts less than A against D, without
    pretending the steps are equal. Every rating must be in ``order``."""
    rank = {value: i for i, value in enumerate(order)}
    if len(rank) != len(order):
        raise ValueError(f"order repeats a value: {list(order)}")
    unknown = {v for unit in units for v in unit if v is not None and v not in rank}
    if unknown:
        raise ValueError(f"ratings not in the order: {sorted(map(repr, unknown))}")
    coincidences, totals = _coincidences(units)
    # cumulative[i]: pairable ratings ranked before position i (marginals n_g of the matrix).
    cumulative = [0.0]
    for value in order:
        cumulative.append(cumulative[-1] + totals.get(value, 0.0))

    def delta(a: Hashable, b: Hashable) -> float:
        low, high = sorted((rank[a], rank[b]))
        between = cumulative[high + 1] - cumulative[low]
        return (between - (totals[a] + totals[b]) / 2) ** 2

    return _alpha(coincidences, totals, delta)


def krippendorff_alpha(units: Sequence[Sequence[Any]], delta: Callable[[Any, Any], float]) -> float:
    """Krippendorff's alpha with the difference function ``delta`` (see the ones above)."""
    coincidences, totals = _coincidences(units)
    return _alpha(coincidences, totals, delta)


def _coincidences(
    units: Sequence[Sequence[Any]],
) -> tuple[dict[tuple[Hashable, Hashable], float], dict[Hashable, float]]:
    """The coincidence matrix of the pairable ratings and its marginals."""
    coincidences: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for a, b in permutations(values, 2):
            coincidences[(a, b)] += 1 / (m - 1)
    if not coincidences:
        raise ValueError("no item has two ratings")
    totals: defaultdict[Hashable, float] = defaultdict(float)
    for (a, _), weight in coincidences.items():
        totals[a] += weight
    return dict(coincidences), dict(totals)


def _alpha(
    coincidences: dict[tuple[Hashable, Hashable], float],
    totals: dict[Hashable, float],
    delta: Callable[[Any, Any], float],
) -> float:
    n = sum(totals.values())
    disagree_observed = sum(w * delta(a, b) for (a, b), w in coincidences.items() if a != b)
    disagree_expected = sum(
        totals[a] * totals[b] * delta(a, b) for a in totals for b in totals if a != b
    ) / (n - 1)
    if disagree_expected == 0:
        return 1.0
    return 1.0 - disagree_observed / disagree_expected
