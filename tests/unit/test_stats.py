"""Agreement statistics against textbook values, and their properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl_gateway.calibration.stats import (
    cohen_kappa,
    krippendorff_alpha_interval,
    krippendorff_alpha_nominal,
    krippendorff_alpha_ordinal,
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
    # The same data as ordinal values: 0.815; as interval values: 0.849 (same paper).
    assert krippendorff_alpha_ordinal(units, [1, 2, 3, 4, 5]) == pytest.approx(0.815, abs=1e-3)
    assert krippendorff_alpha_interval(units) == pytest.approx(0.849, abs=1e-3)
    # Only the ranks matter: best first or worst first, and letters instead of numbers.
    letters = [[None if v is None else "EDCBA"[v - 1] for v in unit] for unit in units]
    assert krippendorff_alpha_ordinal(letters, "ABCDE") == pytest.approx(0.815, abs=1e-3)


def test_ordinal_alpha_counts_adjacent_grades_as_small_disagreements() -> None:
    # Every disagreement is between neighbouring grades: nominal alpha sees as much
    # disagreement as if they were A against D; the ordinal metric sees near-agreement.
    units = [("A", "A"), ("A", "B"), ("B", "B"), ("B", "C"), ("C", "C"), ("C", "D"), ("D", "D")]
    units += [("A", "A"), ("D", "D"), ("B", "B"), ("C", "C")]
    nominal = krippendorff_alpha_nominal(units)
    ordinal = krippendorff_alpha_ordinal(units, "ABCD")
    assert ordinal > nominal + 0.2
    # The same number of disagreements, all between the extremes: worse than nominal.
    far = [("A", "D") if a != b else (a, b) for a, b in units]
    assert krippendorff_alpha_ordinal(far, "ABCD") < krippendorff_alpha_nominal(far)


def test_ordinal_alpha_edge_cases() -> None:
    assert krippendorff_alpha_ordinal([("B", "B", None), ("B", "B")], "ABC") == 1.0
    with pytest.raises(ValueError, match="two ratings"):
        krippendorff_alpha_ordinal([("A", None), ("B",)], "AB")
    with pytest.raises(ValueError, match="not in the order"):
        krippendorff_alpha_ordinal([("A", "E")], "ABCD")
    with pytest.raises(ValueError, match="repeats"):
        krippendorff_alpha_ordinal([("A", "B")], "ABA")


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


@given(st.lists(st.lists(grades | st.none(), min_size=2, max_size=4), min_size=2, max_size=30))
def test_ordinal_alpha_is_bounded_and_ignores_the_direction(units: list[list[str | None]]) -> None:
    if sum(1 for u in units if sum(v is not None for v in u) >= 2) == 0:
        return
    alpha = krippendorff_alpha_ordinal(units, "ABCD")
    assert alpha <= 1.0 + 1e-9
    assert alpha == pytest.approx(krippendorff_alpha_ordinal(units, "DCBA"))


@given(st.lists(st.lists(st.sampled_from("AB"), min_size=2, max_size=4), min_size=1, max_size=30))
def test_ordinal_alpha_on_two_grades_is_nominal_alpha(units: list[list[str]]) -> None:
    # With two grades there is only one distance: order carries no information.
    assert krippendorff_alpha_ordinal(units, "AB") == pytest.approx(
        krippendorff_alpha_nominal(units)
    )
