"""Rubrics in the policy files: the shipped ones load and cover every rule, definitions name
real grades, and grades that do not fit a rubric are refused with the dimension named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.policy.rubrics import grade_problem
from hitl_gateway.policy.schema import Dimension, Rubric
from hitl_gateway.policy.tools import lint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = load_policy_set(CONFIGS / "policies")
CLINICAL = SHIPPED.routing.rubrics["clinical-accuracy"]


def test_every_shipped_rule_names_a_declared_rubric_with_criteria() -> None:
    for loaded in SHIPPED.policies.values():
        for _, rule in loaded.policy.rules():
            if rule.rubric:
                rubric = SHIPPED.routing.rubrics[rule.rubric]
                assert rubric.criteria
                assert rubric.dimensions
                assert rubric.reject_reasons
    assert not [w for w in lint(SHIPPED) if "is not declared" in w.message]


def test_grades_that_fit_pass_and_those_that_do_not_name_the_dimension() -> None:
    assert grade_problem({"accuracy": 3}, "clinical-accuracy", CLINICAL) is None  # 3 is "3"
    assert grade_problem({"accuracy": 3.0}, "clinical-accuracy", CLINICAL) is None
    assert grade_problem({"accuracy": 3.5}, "clinical-accuracy", CLINICAL) is not None
    assert grade_problem({"accuracy": "5", "completeness": "1"}, "c", CLINICAL) is None
    assert grade_problem({}, "clinical-accuracy", CLINICAL) is None  # grading is not forced
    assert grade_problem({"accuracy": 7}, "clinical-accuracy", CLINICAL) == (
        "grade 'accuracy' must be one of 5, 4, 3, 2, 1 (got 7)"
    )
    assert grade_problem({"tone": "good"}, "clinical-accuracy", CLINICAL) == (
        "'tone' is not a dimension of rubric clinical-accuracy (its dimensions: accuracy,"
        " completeness)"
    )
    helpfulness = SHIPPED.routing.rubrics["helpfulness"]
    assert grade_problem({"overall": "B"}, "helpfulness", helpfulness) is None
    assert grade_problem({"overall": "E"}, "helpfulness", helpfulness) is not None
    # No rubric, or one without dimensions: grades are taken as they come.
    assert grade_problem({"anything": 9}, "x", None) is None
    assert grade_problem({"anything": 9}, "x", Rubric(grades=("a", "b"))) is None


def test_definitions_must_name_grades_the_dimension_has() -> None:
    with pytest.raises(ValidationError, match="definitions name grades it does not have: 6"):
        Dimension(grades=("5", "4"), definitions={"6": "unheard of"})
    with pytest.raises(ValidationError, match="grades must be distinct"):
        Dimension(grades=("a", "a"))
    with pytest.raises(ValidationError):
        Rubric(criteria="x" * 9_000)
