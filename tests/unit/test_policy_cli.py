"""``hitl-gateway policy check / simulate / schema`` as a compliance team runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from hitl_gateway.cli import main
from hitl_gateway.policy.tools import json_schemas

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A private copy of the shipped configs to break."""
    shutil.copytree(CONFIGS / "policies", tmp_path / "policies")
    shutil.copy(CONFIGS / "pools.yaml", tmp_path / "pools.yaml")
    shutil.copy(CONFIGS / "routing.yaml", tmp_path / "routing.yaml")
    return tmp_path


def test_check_passes_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(CONFIGS / "policies")]) == 0
    out = capsys.readouterr().out
    assert "ok: 10 policies, 17 pools" in out
    assert "200 is the minimum" in out  # the 50-a-week calibration quota is flagged


def test_check_warns_on_unstaffed_pools_and_unspoken_languages(
    configs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reviewers = configs / "reviewers.yaml"
    reviewers.write_text(
        "reviewers:\n  - {id: ana, token_sha256: '" + "0" * 64 + "', pools: ['*']}\n"
    )
    args = ["policy", "check", str(configs / "policies"), "--reviewers", str(reviewers)]
    assert main(args) == 0
    assert "no reviewer in" not in capsys.readouterr().out  # one reviewer who may do all
    reviewers.write_text(
        "reviewers:\n"
        "  - {id: ana, token_sha256: '" + "0" * 64 + "', pools: [clinicians, senior-clinicians,"
        " review-leads, language-desk]}\n"
    )
    traffic = CONFIGS / "traffic" / "multilingual.yaml"
    assert main([*args, "--traffic", str(traffic)]) == 0
    out = capsys.readouterr().out
    assert (
        "domain 'legal-drafts' sends items to pool 'lawyers', which no reviewer in"
        f" {reviewers} may decide" in out
    )
    assert "pool 'clinicians'" not in out
    assert "support-chat: no pool speaks pt-BR: 14.9 reviews/day go to the fallback pool" in out
    assert main([*args, "--traffic", str(traffic), "--strict"]) == 2


def test_check_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--strict", str(CONFIGS / "policies")]) == 2


def test_errors_name_file_field_line_and_expectation(
    configs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configs / "policies" / "support-chat.yaml"
    text = (
        path.read_text().replace("below: 0.6", "below: 6").replace("action: hold", "actoin: hold")
    )
    path.write_text(text)
    assert main(["policy", "check", str(configs / "policies")]) == 2
    err = capsys.readouterr().err
    line_of_below = next(i for i, ln in enumerate(text.splitlines(), 1) if "below: 6" in ln)
    assert f"support-chat.yaml:{line_of_below}: error: confidence_cascade.below:" in err
    assert "less than or equal to 1" in err
    assert "confidence_cascade.actoin: Extra inputs are not permitted" in err


def test_cross_file_errors(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = configs / "policies" / "translations.yaml"
    path.write_text(path.read_text().replace("de: native-de", "de: native-fr"))
    (configs / "policies" / "clinical-summaries.yaml").write_text(
        (configs / "policies" / "clinical-summaries.yaml")
        .read_text()
        .replace("pool: clinicians", "pool: physicians")
    )
    assert main(["policy", "check", str(configs / "policies")]) == 2
    err = capsys.readouterr().err
    assert "pool 'native-fr' does not list language 'de'" in err
    assert "pool 'physicians' is not defined in pools.yaml" in err


def test_bad_duration_and_file_name_mismatch(
    configs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configs / "policies" / "legal-drafts.yaml"
    path.write_text(path.read_text().replace("sla: 1d", "sla: tomorrow"))
    (configs / "policies" / "renamed.yaml").write_text("domain: other\n")
    assert main(["policy", "check", str(configs / "policies")]) == 2
    err = capsys.readouterr().err
    assert "'tomorrow' is not a duration like 90s, 30m, 4h, 2d or 1w" in err
    assert "domain 'other' must match the file name 'renamed'" in err


def test_shipped_json_schemas_match_the_models() -> None:
    for name, content in json_schemas().items():
        shipped = (CONFIGS / "schema" / name).read_bytes()
        assert shipped == content, f"configs/schema/{name} is stale: run hitl-gateway policy schema"
    policy_schema = orjson.loads(json_schemas()["policy.schema.json"])
    assert policy_schema["additionalProperties"] is False


def _traffic(path: Path) -> Path:
    lines = [
        {"id": f"c{i}", "domain": "clinical-summaries", "confidence": 0.9} for i in range(10)
    ] + [{"id": f"s{i}", "domain": "support-chat", "confidence": i / 20} for i in range(20)]
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\nnot json\n")
    return path


def test_simulate_prints_routes_pools_and_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = _traffic(tmp_path / "t.jsonl")
    assert (
        main(
            ["policy", "simulate", "--input", str(traffic), "--policies", str(CONFIGS / "policies")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "31 records" in out
    clinical = next(line for line in out.splitlines() if line.startswith("clinical-summaries"))
    assert clinical.split() == ["clinical-summaries", "0", "0", "10", "0"]
    chat = next(line for line in out.splitlines() if line.startswith("support-chat"))
    assert chat.split() == ["support-chat", "8", "0", "12", "0"]  # below 0.6: 12 of 20
    assert "invalid records: not_json 1" in out
    assert "clinicians" in out


def test_simulate_diff_shows_what_a_change_does(
    configs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = _traffic(tmp_path / "t.jsonl")
    path = configs / "policies" / "support-chat.yaml"
    path.write_text(path.read_text().replace("below: 0.6", "below: 0.3"))
    args = ["policy", "simulate", "--input", str(traffic), "--policies", str(configs / "policies")]
    assert main([*args, "--diff", str(CONFIGS / "policies")]) == 0
    out = capsys.readouterr().out
    assert "6 of 31 records change route or pool" in out
    assert "hold/general-graders -> pass/-" in out


def test_simulate_missing_input_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "simulate", "--input", "/nonexistent.jsonl"]) == 2
    assert "no such input file: /nonexistent.jsonl" in capsys.readouterr().err


def test_example_reviewers_file_is_valid() -> None:
    from hitl_gateway.review.auth import Reviewers  # noqa: PLC0415

    reviewers = Reviewers.load(CONFIGS / "reviewers.example.yaml")
    ana = reviewers.get("dr-ana")
    assert ana is not None
    assert ana.may_review("clinicians", "clinical-summaries")
    assert not ana.may_review("clinicians", "legal-drafts")
