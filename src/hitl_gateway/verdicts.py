"""What a reviewer decides, and one reviewer's vote: the vocabulary the review life cycle
(review/state.py) and the calibration windows (calibration/) share. A leaf: imports nothing
of the gateway's."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    APPROVE = "approve"  # deliver the original
    EDIT = "edit"  # deliver the reviewer's edited output
    REJECT = "reject"  # block; the producing service falls back


TERMINAL_STATE = {Verdict.APPROVE: "approved", Verdict.EDIT: "edited", Verdict.REJECT: "rejected"}


@dataclass(frozen=True, slots=True)
class Vote:
    decision_id: str
    reviewer: str
    verdict: Verdict
    at_ms: int
    edited_output: Any = None
    grade: str | None = None
    grades: dict[str, float | str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "reviewer": self.reviewer,
            "verdict": self.verdict.value,
            "at_ms": self.at_ms,
            "edited_output": self.edited_output,
            "grade": self.grade,
            "grades": self.grades,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Vote:
        return cls(
            raw["decision_id"], raw["reviewer"], Verdict(raw["verdict"]), raw["at_ms"],
            raw.get("edited_output"), raw.get("grade"), raw.get("grades") or {},
        )  # fmt: skip
