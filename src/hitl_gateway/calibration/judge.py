"""Judge calibration: does the automated judge still agree with blind human grades?

Pure. Per domain (or stratum), a rolling window of (judge grade, human grade) pairs yields
percent agreement, Cohen's kappa and a 95% Wilson interval, or "insufficient data" below
the minimum sample (the guide: 200 cases for a production-grade estimate). Below the
agreement threshold (the guide: 85%) with enough cases, the verdict is to recalibrate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hitl_gateway.calibration.stats import cohen_kappa, percent_agreement, wilson_interval

DEFAULT_THRESHOLD = 0.85
DEFAULT_MIN_CASES = 200


class Status(StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    CALIBRATED = "calibrated"
    RECALIBRATE = "recalibrate"


@dataclass(frozen=True, slots=True)
class Report:
    status: Status
    cases: int
    agreement: float | None = None
    kappa: float | None = None
    interval: tuple[float, float] | None = None

    def describe(self) -> str:
        if self.agreement is None or self.interval is None or self.kappa is None:
            return f"insufficient data: {self.cases} cases"
        low, high = self.interval
        return (
            f"{self.status.value}: agreement {self.agreement:.1%} (95% CI {low:.1%} to "
            f"{high:.1%}), kappa {self.kappa:.2f}, {self.cases} cases"
        )


class JudgeAgreement:
    """The last ``window`` blind comparisons for one domain or stratum."""

    def __init__(
        self,
        window: int = 1_000,
        min_cases: int = DEFAULT_MIN_CASES,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if min_cases < 1 or window < min_cases:
            raise ValueError("need 1 <= min_cases <= window")
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self._pairs: deque[tuple[str, str]] = deque(maxlen=window)
        self._min_cases = min_cases
        self._threshold = threshold

    def add(self, judge_grade: str, human_grade: str) -> None:
        self._pairs.append((judge_grade, human_grade))

    def report(self) -> Report:
        return assess(list(self._pairs), self._min_cases, self._threshold)


def assess(
    pairs: Sequence[tuple[str, str]],
    min_cases: int = DEFAULT_MIN_CASES,
    threshold: float = DEFAULT_THRESHOLD,
) -> Report:
    """The verdict on ``pairs`` of (judge grade, human grade)."""
    cases = len(pairs)
    if cases < min_cases or cases == 0:
        return Report(Status.INSUFFICIENT_DATA, cases)
    agreement = percent_agreement(pairs)
    agreeing = sum(a == b for a, b in pairs)
    status = Status.CALIBRATED if agreement >= threshold else Status.RECALIBRATE
    return Report(status, cases, agreement, cohen_kappa(pairs), wilson_interval(agreeing, cases))
