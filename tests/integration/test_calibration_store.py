"""The calibration windows in real Redis: a replayed decision is counted once, and the
decision that changed a status reports the change again when replayed (so its events land in
the replay's transaction), while later decisions do not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from hitl_gateway.calibration.evidence import Evidence, JudgePair
from hitl_gateway.calibration.store import CalibrationStore
from hitl_gateway.policy.schema import Calibration
from hitl_gateway.settings import RedisSettings

from .kafka_io import REDIS_URL

CAL = Calibration(min_cases=4, window=10, reviewer_min_ratings=1)


def _pair(agree: bool) -> Evidence:
    return Evidence(judge=JudgePair("d", "", "pass", "pass" if agree else "fail"))


@pytest.fixture
async def store() -> AsyncIterator[CalibrationStore]:
    s = CalibrationStore(RedisSettings(url=REDIS_URL, key_prefix=f"t{uuid.uuid4().hex[:8]}:"))
    yield s
    await s.stop()


async def _judge_fields(store: CalibrationStore) -> dict[str, str]:
    (summary,) = [s for s in await store.summaries() if s.kind == "judge"]
    return summary.fields


async def test_replays_count_once_and_repeat_only_their_own_status_change(
    store: CalibrationStore,
) -> None:
    for n in range(3):
        changes = await store.record(f"ok-{n}", _pair(True), CAL)
        # The first decision moves "" -> insufficient_data; the next two change nothing.
        assert [c.status for c in changes] == (["insufficient_data"] if n == 0 else [])
    assert (await _judge_fields(store))["cases"] == "3"

    # The 4th case reaches min_cases: 3 of 4 agree, 0.75 < 0.85 -> recalibrate.
    (change,) = await store.record("bad-1", _pair(False), CAL)
    assert (change.kind, change.previous, change.status) == (
        "judge", "insufficient_data", "recalibrate"
    )  # fmt: skip
    assert change.labels == {"domain": "d", "stratum": "all"}
    assert change.summary["agreement"] == "0.75"

    # Its transaction aborted; the decision is applied again: not counted twice, and the
    # change is reported again so the replay publishes the event.
    (again,) = await store.record("bad-1", _pair(False), CAL)
    assert (again.previous, again.status) == ("insufficient_data", "recalibrate")
    assert (await _judge_fields(store))["cases"] == "4"

    # A later decision that keeps the status reports nothing.
    assert await store.record("bad-2", _pair(False), CAL) == []
    fields = await _judge_fields(store)
    assert fields["cases"] == "5"
    assert fields["status"] == "recalibrate"
    assert float(fields["agreement"]) == pytest.approx(0.6)


async def test_the_window_keeps_the_last_cases_only(store: CalibrationStore) -> None:
    for n in range(10):
        await store.record(f"bad-{n}", _pair(False), CAL)
    changes = []
    for n in range(10):
        changes += await store.record(f"ok-{n}", _pair(True), CAL)
    fields = await _judge_fields(store)
    assert fields["cases"] == "10"
    assert fields["agreement"] == "1.0"
    # recalibrate -> calibrated once the window holds enough agreeing cases (9 of 10).
    assert [(c.previous, c.status) for c in changes] == [("recalibrate", "calibrated")]
