"""Calibration through the real pipeline: reviewers' decisions move the judge-agreement
metric and trigger exactly one recalibrate event; two-reviewer items move reviewer agreement
and flag the reviewer who drifts from consensus; gold items measure a reviewer and release
nothing."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hitl_gateway.settings import ReviewSettings, RuntimeSettings

from .gateways import ApiStack, serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, produce, read_all, wait_until

GRANTS = {
    "gia": ["calibration-graders"],
    "leo": ["lawyers"],
    "lia": ["lawyers"],
    "sam": ["senior-counsel"],
}

GRADED = """
domain: general-assistant
sampling:
  quota: {count: 1000, window: 1w}
  stratify_by: [language]
  strata: 2
  blind: true
  pool: calibration-graders
  sla: 7d
calibration: {judge_threshold: 0.85, min_cases: 10, window: 20, reviewer_min_ratings: 4}
"""

PANEL = """
domain: legal-drafts
mandatory_review:
  pool: lawyers
  reviewers: 2
  adjudicator_pool: senior-counsel
  sla: 1d
calibration:
  reviewer_threshold: 0.8
  reviewer_min_ratings: 4
  min_cases: 10
  window: 50
  gold: {file: gold.jsonl, rate: 1.0}
"""

GOLD = {
    "id": "bad-indemnity",
    "verdict": "reject",
    "grade": "unsound",
    "record": {"domain": "legal-drafts", "output": {"clause": "Unlimited indemnity."}},
}


class Stack(ApiStack):
    async def decide(self, who: str, item_id: str, verdict: str, **body: Any) -> dict[str, Any]:
        seen = await self.item(who, item_id)
        response = await self.http.post(
            f"/v1/items/{item_id}/decisions",
            json={"decision_id": uuid.uuid4().hex, "verdict": verdict,
                  "content_hash": seen["content_hash"], **body},
            headers=self.auth(who),
        )  # fmt: skip
        assert response.status_code in (200, 202), response.text
        return response.json()  # type: ignore[no-any-return]

    async def queue(self, who: str, pool: str) -> list[str]:
        response = await self.http.get(
            f"/v1/pools/{pool}/items?limit=500",
            headers=self.auth(who),
        )
        assert response.status_code == 200, response.text
        return [item["item_id"] for item in response.json()["items"]]

    async def settled(self, check: Callable[[], bool]) -> None:
        """Wait for the observer's next samples to show ``check``."""

        async def ok() -> bool:
            return check()

        await wait_until(ok, timeout_s=20, interval_s=0.05)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    configs = tmp_path / "configs"
    (configs / "policies").mkdir(parents=True)
    shutil.copy(CONFIGS / "pools.yaml", configs / "pools.yaml")
    shutil.copy(CONFIGS / "routing.yaml", configs / "routing.yaml")
    (configs / "policies" / "general-assistant.yaml").write_text(GRADED)
    (configs / "policies" / "legal-drafts.yaml").write_text(PANEL)
    (configs / "policies" / "gold.jsonl").write_text(orjson.dumps(GOLD).decode() + "\n")
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    base = fresh_settings(policy_dir=configs / "policies")
    settings = base.model_copy(
        update={
            "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
            "runtime": RuntimeSettings(log_format="json", metrics_interval_s=0.1),
        }
    )
    async with serving(settings) as (gateway, http):
        yield Stack(settings, gateway, tokens, http)


async def test_human_grades_move_judge_agreement_and_trigger_one_recalibrate_event(
    stack: Stack,
) -> None:
    ids = [f"ga-{i}" for i in range(20)]
    await produce(
        stack.settings.topics.outputs,
        [(i.encode(), orjson.dumps({"id": i, "domain": "general-assistant", "language": "en",
          "judge": {"grade": "pass", "score": 0.9}, "output": {"text": i}})) for i in ids],
    )  # fmt: skip
    labels = {"domain": "general-assistant", "stratum": "all"}
    stratum = {"domain": "general-assistant", "stratum": "language=en"}

    shown = await stack.item("gia", ids[0])
    assert shown["blind"] is True
    assert "judge" not in shown["record"]  # blind: the reviewer grades without the judge's grade

    # 12 blind grades agreeing with the judge: insufficient data until 10, then calibrated.
    for n, item_id in enumerate(ids[:12], start=1):
        await stack.decide("gia", item_id, "approve", grade="pass")
        if n == 5:
            await stack.settled(lambda: stack.metric("hitl_judge_cases", **labels) == 5)
            status = "hitl_judge_calibration_status"
            assert stack.metric(status, **labels, status="insufficient_data") == 1
            assert stack.metric("hitl_judge_agreement_ratio", **labels) is None
    await stack.settled(lambda: stack.metric("hitl_judge_agreement_ratio", **labels) == 1.0)
    assert stack.metric("hitl_judge_calibration_status", **labels, status="calibrated") == 1

    # 8 disagreeing: 12/15 = 0.8 falls below 0.85 at the 15th; 12/20 = 0.6 at the end.
    for item_id in ids[12:]:
        await stack.decide("gia", item_id, "approve", grade="fail", grades={"accuracy": 2})
    await stack.settled(
        lambda: (
            stack.metric("hitl_judge_agreement_ratio", **labels) == 0.6
            and stack.metric("hitl_judge_agreement_ratio", **stratum) == 0.6
        )
    )
    assert stack.metric("hitl_judge_calibration_status", **labels, status="recalibrate") == 1
    assert stack.metric("hitl_judge_agreement_ratio", **stratum) == 0.6
    assert stack.metric("hitl_judge_cases", **labels) == 20
    low = stack.metric("hitl_judge_agreement_lower_bound", **labels)
    high = stack.metric("hitl_judge_agreement_upper_bound", **labels)
    assert low is not None
    assert high is not None
    assert low < 0.6 < high
    assert stack.metric("hitl_calibration_events_total", type="recalibrate") == 2  # all + en

    topics = stack.settings.topics
    events = [orjson.loads(r.value) for r in await read_all(topics.calibration)]
    assert sorted((e["type"], e["stratum"]) for e in events) == [
        ("recalibrate", "all"), ("recalibrate", "language=en")
    ]  # fmt: skip
    event = next(e for e in events if e["stratum"] == "all")
    assert event["domain"] == "general-assistant"
    assert event["agreement"] == pytest.approx(0.8)  # the 15th case crossed the threshold
    assert event["cases"] == 15
    audit = [orjson.loads(r.value) for r in await read_all(topics.audit)]
    assert sum(a["type"] == "recalibrate" for a in audit) == 2
    training = [orjson.loads(r.value) for r in await read_all(topics.training)]
    disagreements = [t for t in training if t["type"] == "judge_disagreement"]
    assert sorted(t["item_id"] for t in disagreements) == sorted(ids[12:])
    assert disagreements[0]["judge"]["grade"] == "pass"
    assert disagreements[0]["human_grade"] == "fail"
    assert disagreements[0]["original_output"] == {"text": disagreements[0]["item_id"]}
    assert disagreements[0]["schema_version"] == 2
    assert disagreements[0]["reviewer"] is None  # the policy does not allow identities
    assert disagreements[0]["reviewer_pool"] is not None


async def test_reviewer_drift_is_flagged_and_gold_items_measure_without_releasing(
    stack: Stack,
) -> None:
    ids = [f"clause-{i}" for i in range(8)]
    await produce(
        stack.settings.topics.outputs,
        [(i.encode(), orjson.dumps({"id": i, "domain": "legal-drafts",
          "output": {"clause": i}})) for i in ids],
    )  # fmt: skip
    for item_id in ids[:4]:  # both approve: consensus, both agree
        await stack.decide("leo", item_id, "approve", grades={"soundness": 4})
        await stack.decide("lia", item_id, "approve", grades={"soundness": 4})
    for item_id in ids[4:]:  # they disagree; the adjudicator sides with lia
        await stack.decide("leo", item_id, "approve", grades={"soundness": 4})
        await stack.decide("lia", item_id, "reject", grades={"soundness": 1})
        await stack.decide("sam", item_id, "reject")

    leo = {"pool": "lawyers", "reviewer": "leo"}
    lia = {"pool": "lawyers", "reviewer": "lia"}
    verdict = {"pool": "lawyers", "rubric": "-", "dimension": "verdict"}
    # Sampled gauges: wait until the last item's figures show.
    await stack.settled(
        lambda: (
            stack.metric("hitl_reviewer_alpha_items", **verdict) == 8
            and stack.metric("hitl_reviewer_consensus_agreement_ratio", **leo)
            == pytest.approx(8 / 12)
            and stack.metric("hitl_reviewer_consensus_agreement_ratio", **lia) == 1.0
        )
    )
    assert stack.metric("hitl_reviewer_flagged", **leo) == 1
    assert stack.metric("hitl_reviewer_flagged", **lia) == 0
    # leo: verdict and soundness agree on 4 items, the verdict disagrees on 4 (soundness split
    # 4 vs 1 with no adjudicator grade: no consensus, not counted) -> 8/12.
    assert stack.metric("hitl_reviewer_consensus_agreement_ratio", **leo) == pytest.approx(8 / 12)
    assert stack.metric("hitl_reviewer_consensus_agreement_ratio", **lia) == 1.0
    alpha = stack.metric("hitl_reviewer_alpha", **verdict)
    assert alpha is not None
    assert alpha < 0.5  # half the items split
    soundness = {"pool": "lawyers", "rubric": "-", "dimension": "soundness"}
    assert stack.metric("hitl_reviewer_alpha_items", **soundness) == 8

    # Every real item brought one gold item into the same queue (rate 1.0).
    gold_ids = [i for i in await stack.queue("leo", "lawyers") if i not in ids]
    assert len(gold_ids) == 8
    shown = await stack.item("leo", gold_ids[0])
    assert shown["domain"] == "legal-drafts"
    assert "gold" not in orjson.dumps(shown).decode()
    for n, gold_id in enumerate(gold_ids):
        await stack.decide("leo", gold_id, "approve" if n == 0 else "reject", grade="unsound")
    await stack.settled(lambda: stack.metric("hitl_reviewer_gold_items", **leo) == 8)
    assert stack.metric("hitl_reviewer_gold_accuracy_ratio", **leo) == 7 / 8

    topics = stack.settings.topics
    events = [orjson.loads(r.value) for r in await read_all(topics.calibration)]
    assert [(e["type"], e["reviewer"]) for e in events] == [("reviewer_flagged", "leo")]
    tasks = [orjson.loads(r.value) for r in await read_all(topics.review_tasks)]
    gold_tasks = [t for t in tasks if t["item_id"] in gold_ids]
    assert len(gold_tasks) == 8
    assert all("gold" not in orjson.dumps(t).decode() for t in gold_tasks)
    released = await read_all(topics.delivered) + await read_all(topics.blocked)
    training = [orjson.loads(r.value) for r in await read_all(topics.training)]
    for gold_id in gold_ids:
        assert all((r.key or b"").decode() != gold_id for r in released)
        assert all(t["item_id"] != gold_id for t in training)
    audit = [orjson.loads(r.value) for r in await read_all(topics.audit)]
    decided_gold = [a for a in audit if a["type"] == "decided" and a.get("gold")]
    assert len(decided_gold) == 8
