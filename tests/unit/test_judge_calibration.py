"""Judge calibration verdicts: insufficient data, calibrated, recalibrate."""

from __future__ import annotations

import pytest

from hitl_gateway.calibration.judge import Status, assess


def _pairs(agree: int, disagree: int) -> list[tuple[str, str]]:
    pairs = [("ABCD"[i % 4], "ABCD"[i % 4]) for i in range(agree)]
    return pairs + [("ABCD"[i % 4], "ABCD"[(i + 1) % 4]) for i in range(disagree)]


def test_below_the_minimum_sample_there_is_no_number() -> None:
    report = assess(_pairs(40, 10))  # the guide's 50 weekly cases: too few for a verdict
    assert (report.status, report.cases, report.agreement) == (Status.INSUFFICIENT_DATA, 50, None)
    assert (report.kappa, report.interval) == (None, None)


def test_high_agreement_is_calibrated() -> None:
    report = assess(_pairs(180, 20))  # 90%
    assert report.status is Status.CALIBRATED
    assert report.agreement == pytest.approx(0.9)
    assert report.interval is not None
    assert report.interval[0] < 0.9 < report.interval[1]
    assert report.kappa is not None
    assert report.kappa > 0.8


def test_agreement_below_85_percent_asks_for_recalibration() -> None:
    report = assess(_pairs(160, 40))  # 80%
    assert report.status is Status.RECALIBRATE
    assert report.agreement == pytest.approx(0.8)
