"""What a reviewer decides, and one reviewer's vote: the vocabulary the review life cycle
(review/state.py) and the calibration windows (calibration/) share. A leaf: imports nothing
of the gateway's."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

# A vote's edit is kept in the hold (its metadata travels in a record header) only up to this
# size; a larger one is kept as its digest, which is all consensus compares. The release is
# always the closing vote's own edit, which its decision carries in full.
INLINE_EDIT_BYTES = 4_096


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
    edit_digest: str | None = None  # of ``edited_output``: what consensus compares

    @classmethod
    def cast(
        cls,
        decision_id: str,
        reviewer: str,
        verdict: Verdict,
        at_ms: int,
        *,
        edited_output: Any = None,
        grade: str | None = None,
        grades: dict[str, float | str] | None = None,
    ) -> Vote:
        """A new vote, with its edit's digest."""
        return cls(decision_id, reviewer, verdict, at_ms, edited_output, grade, grades or {},
                   edit_digest(edited_output))  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        inline = self.edited_output
        if inline is not None and len(orjson.dumps(inline)) > INLINE_EDIT_BYTES:
            inline = None
        return {
            "decision_id": self.decision_id,
            "reviewer": self.reviewer,
            "verdict": self.verdict.value,
            "at_ms": self.at_ms,
            "edited_output": inline,
            "edit_digest": self.edit_digest,
            "grade": self.grade,
            "grades": self.grades,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Vote:
        edited = raw.get("edited_output")
        return cls(
            raw["decision_id"], raw["reviewer"], Verdict(raw["verdict"]), raw["at_ms"],
            edited, raw.get("grade"), raw.get("grades") or {},
            raw.get("edit_digest") or edit_digest(edited),  # votes stored before digests
        )  # fmt: skip


def edit_digest(edited_output: Any) -> str | None:
    """The edit's content, canonically (keys sorted), as a SHA-256 digest."""
    if edited_output is None:
        return None
    canonical = orjson.dumps(edited_output, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()
