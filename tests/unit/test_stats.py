"""Agreement statistics against textbook values, and their properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl_gateway.calibration.stats import (
    cohen_kappa,
    krippendorff_alpha_interval,
    krippendorff_alpha_nominal,
    percent_agreement,
    wilson_interval,
)


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po 0.7, pe 0.5, kappa 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert percent_agreement(pairs) == pytest.approx(0.7)
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 50)[0] == 0.0
    assert wilson_interval(50, 50)[1] == 1.0
    narrow = wilson_interval(170, 200)
    assert narrow[1] - narrow[0] < 0.1  # 200 cases: the guide's minimum for a usable estimate


def test_krippendorff_alpha_textbook_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units,
    # nominal data with missing values -> alpha = 0.743.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = list(zip(a, b, c, d, strict=True))
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=1e-3)
    # The same data as interval values: 0.849 in the same paper.
    assert krippendorff_alpha_interval(units) == pytest.approx(0.849, abs=1e-3)


def test_invalid_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no pairs"):
        cohen_kappa([])
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="two ratings"):
        krippendorff_alpha_nominal([[1, None], [None]])


grades = st.sampled_from("ABCD")
pair_lists = st.lists(st.tuples(grades, grades), min_size=1, max_size=60)


@given(st.lists(grades, min_size=1, max_size=60))
def test_identical_ratings_agree_perfectly(ratings: list[str]) -> None:
    pairs = [(r, r) for r in ratings]
    assert percent_agreement(pairs) == 1.0
    assert cohen_kappa(pairs) == pytest.approx(1.0)


@given(pair_lists)
def test_kappa_is_symmetric_and_bounded(pairs: list[tuple[str, str]]) -> None:
    swapped = [(b, a) for a, b in pairs]
    assert cohen_kappa(pairs) == pytest.approx(cohen_kappa(swapped))
    assert -1.0 - 1e-9 <= cohen_kappa(pairs) <= 1.0 + 1e-9
    assert 0.0 <= percent_agreement(pairs) <= 1.0


@given(st.integers(1, 5_000), st.data())
def test_wilson_interval_contains_the_estimate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


@given(st.lists(st.lists(grades | st.none(), min_size=2, max_size=4), min_size=2, max_size=30))
def test_alpha_is_at_most_one(units: list[list[str | None]]) -> None:
    if sum(1 for u in units if sum(v is not None for v in u) >= 2) == 0:
        return
    assert krippendorff_alpha_nominal(units) <= 1.0 + 1e-9
