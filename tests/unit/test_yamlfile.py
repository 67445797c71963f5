"""Strict YAML: a repeated key is an error naming the file, line and key (never last-wins)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.policy.problems import PolicyError
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.traffic import load_traffic

POOLS = """\
pools:
  - name: clinicians
    languages: [en]
    cost_per_hour_usd: 200
    cases_per_hour: 20
    reviewers: 2
    hours_per_week: 40
"""

POLICY = """\
domain: clinical-summaries
mandatory_review:
  pool: clinicians
  sla: 4h
  rubric: clinical-accuracy
  sla: 400h
  escalation: [{after: 2h, pool: clinicians}]
"""


def test_repeated_key_names_line_key_and_first_line() -> None:
    with pytest.raises(yamlfile.DuplicateKeyError) as caught:
        yamlfile.load(POLICY)
    assert caught.value.problem_mark is not None
    assert caught.value.problem_mark.line + 1 == 6
    assert "duplicate key 'sla' (first given on line 4)" in str(caught.value.problem)


def test_same_key_in_different_mappings_and_merge_keys_are_fine() -> None:
    text = "a: {x: 1}\nb: {x: 2}\nbase: &b {p: 1, q: 2}\nderived:\n  <<: *b\n  q: 3\n"
    assert yamlfile.load(text) == {
        "a": {"x": 1}, "b": {"x": 2}, "base": {"p": 1, "q": 2}, "derived": {"p": 1, "q": 3}
    }  # fmt: skip


def test_repeated_key_in_a_list_item_and_at_top_level() -> None:
    with pytest.raises(yaml.YAMLError):
        yamlfile.load("pools:\n  - name: a\n    name: b\n")
    with pytest.raises(yamlfile.DuplicateKeyError):
        yamlfile.load("domain: a\ndomain: a\n")  # even the same value: one is a mistake


def test_policy_check_refuses_a_policy_with_a_repeated_key(tmp_path: Path) -> None:
    (tmp_path / "pools.yaml").write_text(POOLS)
    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "clinical-summaries.yaml"
    path.write_text(POLICY)
    with pytest.raises(PolicyError) as caught:
        load_policy_set(tmp_path / "policies")
    [problem] = caught.value.problems
    assert problem.file == str(path)
    assert problem.line == 6
    assert "duplicate key 'sla'" in problem.message
    # Without the repeat it loads (the refusal is the key, not the rest of the file).
    path.write_text(POLICY.replace("  sla: 400h\n", ""))
    assert load_policy_set(tmp_path / "policies").policies


def test_pools_reviewers_and_traffic_files_are_strict_too(tmp_path: Path) -> None:
    (tmp_path / "pools.yaml").write_text(POOLS + "    reviewers: 3\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "clinical-summaries.yaml").write_text(
        POLICY.replace("  sla: 400h\n", "")
    )
    with pytest.raises(PolicyError, match=r"pools.yaml:8: error: duplicate key 'reviewers'"):
        load_policy_set(tmp_path / "policies")
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text("reviewers:\n  - id: ana\n    id: bob\n")
    with pytest.raises(ConfigError, match=r"reviewers.yaml.*line 3: duplicate key 'id'"):
        Reviewers.load(reviewers)
    traffic = tmp_path / "traffic.yaml"
    traffic.write_text("domains:\n  a: {daily_volume: 1}\n  a: {daily_volume: 2}\n")
    with pytest.raises(ConfigError, match=r"traffic.yaml.*line 3: duplicate key 'a'"):
        load_traffic(traffic)
