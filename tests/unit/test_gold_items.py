"""Gold items: loaded with the policies, checked line by line, drawn at the configured rate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hitl_gateway.models import InputRecord
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import decide
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.policy.problems import PolicyError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_shipped_gold_file_loads_with_its_policy() -> None:
    policies = load_policy_set(CONFIGS / "policies")
    gold = policies.policies["legal-drafts"].gold
    assert [g.id for g in gold] == ["indemnity-unlimited", "governing-law-ok",
                                    "termination-no-notice"]  # fmt: skip
    assert gold[0].verdict == "reject"


def test_gold_is_drawn_at_the_rate_for_reviewed_items_only_and_deterministically() -> None:
    policies = load_policy_set(CONFIGS / "policies")
    drawn = []
    for i in range(4_000):
        record = InputRecord(id=f"clause-{i}", domain="legal-drafts", language="en")
        first = decide(record, policies, timestamp_ms=0, budgets=MemoryLedger())
        again = decide(record, policies, timestamp_ms=0, budgets=MemoryLedger())
        assert first.gold == again.gold
        drawn.append(first.gold)
    share = sum(g is not None for g in drawn) / len(drawn)
    assert 0.04 < share < 0.06  # rate 0.05
    assert {g.id for g in drawn if g is not None} == {
        "indemnity-unlimited", "governing-law-ok", "termination-no-notice"
    }  # fmt: skip
    passed = decide(
        InputRecord(id="x", domain="support-chat", confidence=0.99),
        policies, timestamp_ms=0, budgets=MemoryLedger(),
    )  # fmt: skip
    assert passed.gold is None


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    shutil.copytree(CONFIGS, tmp_path / "configs")
    return tmp_path / "configs"


def test_bad_gold_lines_are_reported_with_file_line_and_field(configs: Path) -> None:
    gold = configs / "policies" / "gold" / "legal-drafts.jsonl"
    gold.write_text(
        '{"id": "ok", "verdict": "approve", "record": {"domain": "legal-drafts"}}\n'
        '{"id": "bad-verdict", "verdict": "maybe", "record": {"domain": "legal-drafts"}}\n'
        '{"id": "other", "verdict": "reject", "record": {"domain": "support-chat"}}\n'
        '{"id": "conf", "verdict": "reject", "record": {"domain": "legal-drafts", '
        '"confidence": 7}}\n'
        "not json\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy_set(configs / "policies")
    text = str(err.value)
    assert f"{gold}:2: error: verdict:" in text
    assert f"{gold}:3: error: record.domain: record.domain must be 'legal-drafts'" in text
    assert f"{gold}:4: error: record.confidence:" in text
    assert f"{gold}:5: error:" in text
    assert ":1:" not in text


def test_a_missing_gold_file_is_an_error(configs: Path) -> None:
    (configs / "policies" / "gold" / "legal-drafts.jsonl").unlink()
    with pytest.raises(PolicyError, match="no such gold file"):
        load_policy_set(configs / "policies")
