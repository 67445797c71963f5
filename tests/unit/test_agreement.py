"""Which Krippendorff metric a window of reviewer ratings gets, from routing.yaml's rubrics."""

from __future__ import annotations

import orjson
import pytest

from hitl_gateway.calibration.agreement import reviewer_agreement
from hitl_gateway.calibration.stats import krippendorff_alpha_nominal, krippendorff_alpha_ordinal
from hitl_gateway.calibration.store import _summarise
from hitl_gateway.policy.schema import Calibration, Rubric

LETTERS = Rubric(grades=("A", "B", "C", "D"))
LABELS = Rubric(grades=("correct", "incorrect"), scale="nominal")
ADJACENT = [("A", "B"), ("B", "B"), ("C", "D"), ("C", "C"), ("A", "A"), ("D", "D"), ("B", "C")]


def test_an_ordinal_rubric_measures_its_grades_with_the_ordinal_metric() -> None:
    found = reviewer_agreement(ADJACENT, "accuracy", LETTERS)
    assert (found.metric, found.items, found.excluded) == ("ordinal", 7, 0)
    assert found.alpha == pytest.approx(krippendorff_alpha_ordinal(ADJACENT, "ABCD"))
    assert found.alpha is not None
    assert found.alpha > krippendorff_alpha_nominal(ADJACENT)


def test_verdicts_nominal_rubrics_undeclared_rubrics_and_numbers_are_measured_as_before() -> None:
    verdicts = [("approve", "reject"), ("approve", "approve"), ("reject", "reject")]
    assert reviewer_agreement(verdicts, "verdict", LETTERS).metric == "nominal"
    assert reviewer_agreement(ADJACENT, "grade", None).metric == "nominal"
    labels = [("correct", "incorrect"), ("correct", "correct")]
    assert reviewer_agreement(labels, "grade", LABELS).metric == "nominal"
    assert reviewer_agreement([(1, 2), (3, 3.5)], "accuracy", LETTERS).metric == "interval"


def test_a_dimension_that_never_uses_the_rubrics_grades_stays_nominal() -> None:
    # An overall grade on the judge's pass/fail scale, on an item graded with A-D.
    found = reviewer_agreement([("pass", "fail"), ("pass", "pass")], "grade", LETTERS)
    assert (found.metric, found.items, found.excluded) == ("nominal", 2, 0)


def test_grades_outside_the_declared_list_are_left_out_and_counted() -> None:
    units = [*ADJACENT, ("A", "E", "B"), ("E", "C"), ("a", "x")]
    found = reviewer_agreement(units, "accuracy", LETTERS)
    # ("A", "B") still counts; ("E", "C") and ("a", "x") have no pair left.
    assert (found.metric, found.items, found.excluded) == ("ordinal", 8, 4)
    assert found.alpha == pytest.approx(krippendorff_alpha_ordinal([*ADJACENT, ("A", "B")], "ABCD"))


def test_no_pair_of_declared_grades_means_no_alpha() -> None:
    found = reviewer_agreement([("A", "E"), ("F", "B")], "accuracy", LETTERS)
    assert (found.metric, found.items, found.alpha, found.excluded) == ("ordinal", 0, None, 2)


def test_the_stored_summary_uses_the_rubric_named_in_the_window() -> None:
    raw = [orjson.dumps(u) for u in ADJACENT]
    rubrics = {"helpfulness": LETTERS}
    status, fields = _summarise("alpha", "p|helpfulness|grade", raw, Calibration(), rubrics)
    assert status == "measured"
    assert (fields["metric"], fields["items"], fields["excluded"]) == ("ordinal", "7", "0")
    assert float(fields["alpha"]) == pytest.approx(krippendorff_alpha_ordinal(ADJACENT, "ABCD"))
    _, fields = _summarise("alpha", "p|-|grade", raw, Calibration(), rubrics)
    assert fields["metric"] == "nominal"
    _, fields = _summarise("alpha", "p|helpfulness|g", [b'["A","E"]'], Calibration(), rubrics)
    assert (fields["alpha"], fields["items"], fields["excluded"]) == ("", "0", "1")
