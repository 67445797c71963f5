"""Judge calibration verdicts: insufficient data, calibrated, recalibrate."""

from __future__ import annotations

import pytest

from hitl_gateway.calibration.judge import JudgeAgreement, Status


def _fill(tracker: JudgeAgreement, agree: int, disagree: int) -> None:
    for i in range(agree):
        grade = "ABCD"[i % 4]
        tracker.add(grade, grade)
    for i in range(disagree):
        tracker.add("ABCD"[i % 4], "ABCD"[(i + 1) % 4])


def test_below_the_minimum_sample_there_is_no_number() -> None:
    tracker = JudgeAgreement()
    _fill(tracker, 40, 10)  # the guide's 50 weekly cases: too few for a verdict
    report = tracker.report()
    assert (report.status, report.cases, report.agreement) == (Status.INSUFFICIENT_DATA, 50, None)
    assert report.describe() == "insufficient data: 50 cases"


def test_high_agreement_is_calibrated() -> None:
    tracker = JudgeAgreement()
    _fill(tracker, 180, 20)  # 90%
    report = tracker.report()
    assert report.status is Status.CALIBRATED
    assert report.agreement == pytest.approx(0.9)
    assert report.interval is not None
    assert report.interval[0] < 0.9 < report.interval[1]
    assert report.kappa is not None
    assert report.kappa > 0.8


def test_agreement_below_85_percent_asks_for_recalibration() -> None:
    tracker = JudgeAgreement()
    _fill(tracker, 160, 40)  # 80%
    report = tracker.report()
    assert report.status is Status.RECALIBRATE
    assert "recalibrate: agreement 80.0%" in report.describe()


def test_the_window_forgets_old_cases() -> None:
    tracker = JudgeAgreement(window=200, min_cases=200)
    _fill(tracker, 0, 200)  # a bad old judge...
    _fill(tracker, 200, 0)  # ...then 200 agreeing cases after recalibration
    assert tracker.report().agreement == 1.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_cases"):
        JudgeAgreement(window=10, min_cases=200)
    with pytest.raises(ValueError, match="threshold"):
        JudgeAgreement(threshold=1.5)
