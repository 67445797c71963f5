"""Whether a decision's grades fit its item's rubric (pure).

A rubric that declares dimensions fixes what can be graded: every graded key is one of its
dimensions (or ``overall``, when it has an overall scale) and every value one of that
dimension's grades, compared as text (JSON ``3`` is the grade ``"3"``). Grading is not
forced here (a tool may approve without grades); the workspace asks for every dimension.
A rubric without dimensions, or none, takes grades as they come.
"""

from __future__ import annotations

from collections.abc import Mapping

from hitl_gateway.policy.schema import Rubric

OVERALL = "overall"


def grade_problem(grades: Mapping[str, object], name: str, rubric: Rubric | None) -> str | None:
    """Why ``grades`` do not fit rubric ``name`` (None: they do)."""
    if rubric is None or not rubric.dimensions or not grades:
        return None
    for key, value in grades.items():
        if key == OVERALL and rubric.grades:
            allowed = rubric.grades
        elif key in rubric.dimensions:
            allowed = rubric.dimensions[key].grades
        else:
            known = ", ".join(rubric.dimensions) + (f", {OVERALL}" if rubric.grades else "")
            return f"'{key}' is not a dimension of rubric {name} (its dimensions: {known})"
        if as_grade(value) not in allowed:
            return f"grade '{key}' must be one of {', '.join(allowed)} (got {as_grade(value)})"
    return None


def as_grade(value: object) -> str:
    """A grade as text: numbers arrive as JSON numbers (and as floats once validated), so
    ``3``, ``3.0`` and ``"3"`` are the same grade."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
