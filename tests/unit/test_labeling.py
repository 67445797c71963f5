"""The Label Studio bridge's pure parts: the labeling configuration a rubric makes, a held
item as a task (blind items without the judge), annotations as decisions or refused."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest

from hitl_gateway.bridge.labeling import Unusable, decision, instructions, label_config, task_data
from hitl_gateway.models import HoldMeta
from hitl_gateway.policy.loader import load_policy_set

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RUBRICS = load_policy_set(CONFIGS / "policies").routing.rubrics
DATA = {"item_id": "c-1", "content_hash": "sha256:" + "a" * 64, "output_format": "json"}


def _meta(**fields: Any) -> HoldMeta:
    base = {"item_id": "c-1", "domain": "general-assistant", "pool": "general-graders",
            "reviewers": 1, "content_hash": "sha256:" + "a" * 64, "held_at_ms": 1,
            "reasons": [{"rule": "sampling", "detail": "sampled"}],
            "judge": {"grade": "A", "score": 0.9}}  # fmt: skip
    return HoldMeta.of({**base, **fields})


def _region(name: str, kind: str, *values: str) -> dict[str, Any]:
    key = "choices" if kind == "choices" else "text"
    return {"from_name": name, "to_name": "output", "type": kind, "value": {key: list(values)}}


def test_the_labeling_config_is_xml_with_the_rubrics_dimensions_grades_and_reasons() -> None:
    view = ET.fromstring(label_config(RUBRICS["clinical-accuracy"]))  # noqa: S314 - ours
    choices = {c.get("name"): [o.get("value") for o in c] for c in view.iter("Choices")}
    assert choices["verdict"] == ["approve", "edit", "reject"]
    assert choices["grade_accuracy"] == ["5", "4", "3", "2", "1"]
    assert choices["grade_completeness"] == ["5", "4", "3", "2", "1"]
    assert "unsafe advice" in choices["reject_reason"]
    hints = {o.get("value"): o.get("hint") for c in view.iter("Choices") for o in c
             if c.get("name") == "grade_accuracy"}  # fmt: skip
    assert hints["1"] == "dangerous"
    assert {t.get("name") for t in view.iter("TextArea")} == {"edited_output", "notes"}
    bare = ET.fromstring(label_config(None))  # noqa: S314 - our own config
    assert bare.find("Choices") is not None  # no rubric: the verdicts
    assert "physician" in instructions("clinical-accuracy", RUBRICS["clinical-accuracy"])


def test_a_blind_item_is_mirrored_without_the_judge_and_a_gold_item_unmarked() -> None:
    value = orjson.dumps({"id": "c-1", "domain": "general-assistant", "output": {"t": 1},
                          "judge": {"grade": "A"}})  # fmt: skip
    blind = task_data(_meta(blind=True, gold={"id": "g", "verdict": "reject"}), value)
    assert blind["judge"] == ""
    assert "gold" not in orjson.dumps(blind).decode()
    shown = task_data(_meta(), value)
    assert shown["judge"] == "judge: grade A, score 0.9"
    assert (shown["output"], shown["output_format"]) == ('{\n  "t": 1\n}', "json")
    assert shown["reasons"] == "sampling: sampled"


def test_annotations_become_decisions() -> None:
    edit = {"id": 7, "result": [_region("verdict", "choices", "edit"),
                                _region("edited_output", "textarea", '{"text": "fixed"}'),
                                _region("grade_accuracy", "choices", "3"),
                                _region("grade_overall", "choices", "B"),
                                _region("notes", "textarea", "dose")]}  # fmt: skip
    assert decision(edit, DATA, "ana", "ls-1-7") == {
        "decision_id": "ls-1-7", "item_id": "c-1", "reviewer": "ana", "verdict": "edit",
        "content_hash": DATA["content_hash"], "edited_output": {"text": "fixed"},
        "grades": {"accuracy": "3"}, "grade": "B", "notes": "dose",
    }  # fmt: skip
    reject = {"result": [_region("verdict", "choices", "reject"),
                         _region("reject_reason", "choices", "unsafe advice"),
                         _region("notes", "textarea", "see dose")]}  # fmt: skip
    body = decision(reject, DATA, "ana", "d")
    assert isinstance(body, dict)
    assert body["reason"] == "unsafe advice; see dose"
    text = decision({"result": [_region("verdict", "choices", "edit"),
                                _region("edited_output", "textarea", "plain")]},
                    {**DATA, "output_format": "text"}, "ana", "d")  # fmt: skip
    assert isinstance(text, dict)
    assert text["edited_output"] == "plain"


def test_annotations_that_cannot_be_decisions_say_why() -> None:
    assert decision({"result": []}, DATA, "ana", "d") == Unusable(
        "verdict must be one of approve, edit, reject, got []"
    )
    no_text = decision({"result": [_region("verdict", "choices", "edit")]}, DATA, "ana", "d")
    assert no_text == Unusable("an edit needs the edited output")
    bad = decision({"result": [_region("verdict", "choices", "edit"),
                               _region("edited_output", "textarea", "{oops")]},
                   DATA, "ana", "d")  # fmt: skip
    assert isinstance(bad, Unusable)
    assert bad.reason.startswith("the edited output is not JSON")


class _EmptyIndex:
    async def queue(self, *_: Any, **__: Any) -> tuple[int, list[HoldMeta]]:
        return 0, []


async def test_the_bridge_logs_a_failed_cycle_and_tries_again(tmp_path: Path) -> None:
    from label_studio_sdk import AsyncLabelStudio  # noqa: PLC0415
    from structlog.testing import capture_logs  # noqa: PLC0415

    from hitl_gateway.bridge.label_studio import Bridge  # noqa: PLC0415
    from hitl_gateway.settings import KafkaSettings, LabelStudioSettings  # noqa: PLC0415
    from hitl_gateway.sink import Publisher  # noqa: PLC0415

    # Nothing listens on port 9 here: every Label Studio call is refused.
    settings = LabelStudioSettings(url="http://127.0.0.1:9", pools=("clinicians",),
                                   interval_s=0.05)  # fmt: skip
    client = AsyncLabelStudio(base_url=settings.url, api_key="x", timeout=2)
    bridge = Bridge(settings, client, _EmptyIndex(), Publisher(KafkaSettings()),  # type: ignore[arg-type]
                    decisions_topic="d", annotators={},
                    policies=load_policy_set(CONFIGS / "policies"))  # fmt: skip
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(bridge.run(stop))
        for _ in range(200):
            if sum(e["event"] == "label_studio_sync_failed" for e in logs) >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(running, 5)
    failures = [e for e in logs if e["event"] == "label_studio_sync_failed"]
    assert len(failures) >= 2, logs  # the loop went on after the first
    assert "ConnectError" in failures[0]["error"]


def test_pools_the_policies_do_not_know_are_refused() -> None:
    from label_studio_sdk import AsyncLabelStudio  # noqa: PLC0415

    from hitl_gateway.bridge.label_studio import Bridge  # noqa: PLC0415
    from hitl_gateway.errors import ConfigError  # noqa: PLC0415
    from hitl_gateway.settings import KafkaSettings, LabelStudioSettings  # noqa: PLC0415
    from hitl_gateway.sink import Publisher  # noqa: PLC0415

    settings = LabelStudioSettings(pools=("clinicians", "nurses"))
    client = AsyncLabelStudio(base_url=settings.url, api_key="x")
    policies = load_policy_set(CONFIGS / "policies")
    with pytest.raises(ConfigError, match=r"^label_studio.pools: not in pools.yaml: nurses$"):
        Bridge(
            settings,
            client,
            _EmptyIndex(),
            Publisher(KafkaSettings()),  # type: ignore[arg-type]
            decisions_topic="d",
            annotators={},
            policies=policies,
        )


def test_the_annotators_file_names_reviewers_of_the_reviewers_file(tmp_path: Path) -> None:
    from hitl_gateway.bridge.label_studio import load_annotators  # noqa: PLC0415
    from hitl_gateway.errors import ConfigError  # noqa: PLC0415
    from hitl_gateway.review.auth import Reviewer, Reviewers  # noqa: PLC0415

    reviewers = Reviewers((Reviewer(id="ana", token_sha256="0" * 64, pools=("clinicians",)),))
    path = tmp_path / "annotators.yaml"
    path.write_text("annotators:\n  Ana@Example.com: ana\n")
    assert load_annotators(path, reviewers) == {"ana@example.com": "ana"}
    path.write_text("annotators:\n  ana@example.com: ana\n  bo@example.com: bo\n")
    with pytest.raises(ConfigError, match="reviewer id\\(s\\) not in the reviewers file: bo"):
        load_annotators(path, reviewers)
    path.write_text("annotators: [ana]\n")
    with pytest.raises(ConfigError, match="expected 'annotators: \\{e-mail: reviewer id\\}'"):
        load_annotators(path, reviewers)
    path.write_text("annotators:\n  a@example.com: ana\n  a@example.com: ana\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_annotators(path, reviewers)
    with pytest.raises(ConfigError, match="No such file"):
        load_annotators(tmp_path / "missing.yaml", reviewers)


def test_a_list_setting_that_is_not_json_is_refused_naming_its_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hitl_gateway.errors import ConfigError  # noqa: PLC0415
    from hitl_gateway.settings import load_settings  # noqa: PLC0415

    monkeypatch.setenv("HITL_LABEL_STUDIO__POOLS", "clinicians")
    with pytest.raises(ConfigError, match=r'field "label_studio".*list settings take JSON'):
        load_settings()
    monkeypatch.setenv("HITL_LABEL_STUDIO__POOLS", '["clinicians"]')
    monkeypatch.setenv("HITL_LABEL_STUDIO__URL", "label-studio:8080")
    with pytest.raises(ConfigError, match="URL: Value error, url must be an http"):
        load_settings()


def test_the_example_annotators_file_names_reviewers_of_the_example_reviewers_file() -> None:
    from hitl_gateway.bridge.label_studio import load_annotators  # noqa: PLC0415
    from hitl_gateway.review.auth import Reviewers  # noqa: PLC0415

    reviewers = Reviewers.load(CONFIGS / "reviewers.example.yaml")
    assert load_annotators(CONFIGS / "annotators.example.yaml", reviewers)
