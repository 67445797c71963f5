"""Judge calibration: does the automated judge still agree with blind human grades?

Pure. Per domain (or stratum), a rolling window of (judge grade, human grade) pairs yields
percent agreement, Cohen's kappa and a 95% Wilson interval, or "insufficient data" below
the minimum sample (the guide: 200 cases for a production-grade estimate). Below the
agreement threshold (the guide: 85%) with enough cases, the verdict is to recalibrate.
"""

from __future__ import annotations

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
