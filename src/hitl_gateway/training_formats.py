"""Training examples written for the tools ML engineers load them with: JSON lines, a
Hugging Face ``datasets`` dataset (Parquet under ``data/`` and a dataset card), and Argilla's
dataset directory (``.argilla/settings.json``, ``.argilla/dataset.json``, ``records.json``,
as ``rg.Dataset.from_disk`` reads it). Any-shaped values (input, outputs, grades) are JSON
text in the Parquet and Argilla forms, so every row has the same columns and types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import Settings
from hitl_gateway.training import SCHEMA_VERSION

if TYPE_CHECKING:
    from hitl_gateway.training_export import Selection

# The Parquet columns: (name, type, where it comes from). ``_json`` columns hold JSON text.
_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("type", pa.string()), ("schema_version", pa.int32()), ("item_id", pa.string()),
    ("decision_id", pa.string()), ("domain", pa.string()), ("rule", pa.string()),
    ("blocking", pa.bool_()), ("verdict", pa.string()), ("input_json", pa.string()),
    ("model", pa.string()), ("model_version", pa.string()), ("language", pa.string()),
    ("created_at", pa.string()), ("confidence", pa.float64()), ("uncertainty", pa.float64()),
    ("metadata_json", pa.string()), ("original_output_json", pa.string()),
    ("edited_output_json", pa.string()), ("reject_reason", pa.string()),
    ("rubric", pa.string()), ("grade", pa.string()), ("grades_json", pa.string()),
    ("notes", pa.string()), ("judge_grade", pa.string()), ("judge_score", pa.float64()),
    ("judge_model", pa.string()), ("reviewer_pool", pa.string()), ("reviewer", pa.string()),
    ("policy_version", pa.string()), ("held_at_ms", pa.int64()),
    ("decided_at_ms", pa.int64()), ("stratum", pa.string()), ("human_grade", pa.string()),
    ("refs_json", pa.string()),
)  # fmt: skip
_JSON = ("input", "metadata", "original_output", "edited_output", "grades")
_REFS = ("input_ref", "original_output_ref", "edited_output_ref")


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _prepared(path: Path, *, directory: bool) -> None:
    """An output that does not exist yet (or an empty directory): an export never mixes
    with an earlier one."""
    if directory:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"{path} exists and is not an empty directory")
        path.mkdir(parents=True, exist_ok=True)
    elif path.exists():
        raise ConfigError(f"{path} exists: choose a new file")


def write_jsonl(examples: Sequence[dict[str, Any]], path: Path) -> int:
    _prepared(path, directory=False)
    with path.open("wb") as out:
        for example in examples:
            out.write(orjson.dumps(example) + b"\n")
    return len(examples)


def row(example: dict[str, Any]) -> dict[str, Any]:
    """One Parquet row of an example."""
    judge = example.get("judge") or {}
    refs = {k: example[k] for k in _REFS if example.get(k) is not None}
    out: dict[str, Any] = {name: example.get(name) for name, _ in _COLUMNS}
    out.update({f"{k}_json": _json_text(example.get(k)) for k in _JSON})
    out.update(judge_grade=judge.get("grade"), judge_score=judge.get("score"),
               judge_model=judge.get("model"), refs_json=_json_text(refs or None))  # fmt: skip
    if isinstance(out["judge_score"], int):
        out["judge_score"] = float(out["judge_score"])
    return out


def write_hf(
    examples: Sequence[dict[str, Any]], out_dir: Path, *, name: str, selection: Selection
) -> int:
    """``data/train-00000-of-00001.parquet`` and a ``README.md`` card whose ``configs``
    let ``datasets.load_dataset(out_dir)`` find the split."""
    _prepared(out_dir, directory=True)
    schema = pa.schema([pa.field(n, t) for n, t in _COLUMNS])
    table = pa.Table.from_pylist([row(e) for e in examples], schema=schema)
    (out_dir / "data").mkdir()
    pq.write_table(table, out_dir / "data" / "train-00000-of-00001.parquet")
    (out_dir / "README.md").write_text(_card(examples, name, selection), encoding="utf-8")
    return len(examples)


def _when(ms: int | None) -> str:
    return "open" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


_VERDICTS = ("approve", "edit", "reject")


def _card(examples: Sequence[dict[str, Any]], name: str, selection: Selection) -> str:
    domains = sorted({e["domain"] for e in examples if e.get("domain")})
    verdicts = {v: sum(e.get("verdict") == v for e in examples) for v in _VERDICTS}
    counts = f"{verdicts['approve']} approved, {verdicts['edit']} edited, "
    counts += f"{verdicts['reject']} rejected"
    disagreements = sum(e.get("type") == "judge_disagreement" for e in examples)
    columns = "\n".join(f"| `{n}` | {t} |" for n, t in _COLUMNS)
    return f"""---
pretty_name: {name}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
tags:
- human-in-the-loop
- reviewer-corrections
---
# {name}

Reviewer corrections and labels exported from the hitl-gateway training topic
(`hitl-gateway training export --format hf`), schema version {SCHEMA_VERSION}.

- examples: {len(examples)} ({counts})
- judge disagreements among them: {disagreements}
- decided from {_when(selection.since_ms)} until {_when(selection.until_ms)}
- domains: {", ".join(domains) or "none"}{" (selected)" if selection.domains else ""}

Each row is one closed review. `input_json`, `original_output_json`, `edited_output_json`,
`metadata_json`, `grades_json` and `refs_json` hold JSON text (`json.loads`): the gateway
does not constrain their shape. An edit's target is `edited_output_json`; a rejection's
reason is `reject_reason`. `reviewer` is empty unless the domain's policy allows naming
reviewers (`training.reviewer_identity`); `reviewer_pool` says who reviewed. When a value
did not fit the record limit, `refs_json` says where it is kept (input record or decision
record: topic, partition, offset).

| column | type |
|---|---|
{columns}
"""


_NAME = re.compile(r"[^a-z0-9_-]+")


def _question(dimension: str) -> str:
    return "grade_" + (_NAME.sub("_", dimension.lower()) or "x")


def rubric_grades(settings: Settings) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each rubric's dimensions and their grades as the policy files declare them (for
    Argilla's label questions); empty when the policy files cannot be loaded."""
    from hitl_gateway.policy.loader import load_policy_set  # noqa: PLC0415
    from hitl_gateway.policy.problems import PolicyError  # noqa: PLC0415

    p = settings.policy
    try:
        loaded = load_policy_set(p.dir, p.pools_file, p.routing_file)
    except PolicyError:
        return {}
    return {
        name: {d: dim.grades for d, dim in rubric.dimensions.items()}
        for name, rubric in loaded.routing.rubrics.items()
    }


def _labels(
    examples: Sequence[dict[str, Any]], rubrics: dict[str, dict[str, tuple[str, ...]]]
) -> dict[str, list[str]]:
    """Each graded dimension's labels: the declared grades, then any other grade given."""
    labels: dict[str, list[str]] = {}
    for e in examples:
        declared = rubrics.get(e.get("rubric") or "", {})
        for dim, value in (e.get("grades") or {}).items():
            found = labels.setdefault(dim, [])
            for grade in (*declared.get(dim, ()), _grade_text(value)):
                if grade not in found:
                    found.append(grade)
    return labels


def _grade_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field(name: str, required: bool) -> dict[str, Any]:
    return {"id": None, "inserted_at": None, "updated_at": None, "name": name, "title": name,
            "required": required, "description": None, "dataset_id": None, "type": "text",
            "settings": {"type": "text", "use_markdown": False}}  # fmt: skip


def _label_question(name: str, labels: Sequence[str]) -> dict[str, Any]:
    options = [{"text": label, "value": label} for label in labels]
    shown = len(options) if len(options) >= 3 else None  # Argilla: at least 3, or unset
    return {"id": None, "inserted_at": None, "updated_at": None, "name": name, "title": name,
            "description": None, "required": name == "verdict", "dataset_id": None,
            "type": "label_selection",
            "settings": {"type": "label_selection", "options": options,
                         "visible_options": shown}}  # fmt: skip


def _text_question(name: str) -> dict[str, Any]:
    return {"id": None, "inserted_at": None, "updated_at": None, "name": name, "title": name,
            "description": None, "required": False, "dataset_id": None, "type": "text",
            "settings": {"type": "text", "use_markdown": False}}  # fmt: skip


def _metadata(name: str, kind: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"visible_for_annotators": True, "type": kind}
    settings.update({"values": None} if kind == "terms" else {"min": None, "max": None})
    return {"id": None, "inserted_at": None, "updated_at": None, "name": name, "title": name,
            "visible_for_annotators": True, "dataset_id": None, "settings": settings}  # fmt: skip


_TERMS = ("domain", "rule", "model", "model_version", "language", "reviewer_pool",
          "policy_version", "type")  # fmt: skip
_NUMBERS = (("confidence", "float"), ("uncertainty", "float"), ("decided_at_ms", "integer"))


def argilla_settings(labels: dict[str, list[str]]) -> dict[str, Any]:
    questions = [_label_question("verdict", list(_VERDICTS)),
                 _text_question("correction"), _text_question("reject_reason")]  # fmt: skip
    for dim, grades in sorted(labels.items()):
        usable = len(grades) >= 2  # a label question needs two labels; else free text
        questions.append(_label_question(_question(dim), grades) if usable
                         else _text_question(_question(dim)))  # fmt: skip
    return {
        "guidelines": "Reviewer corrections exported by hitl-gateway: the suggestions are the"
        " reviewers' own answers (agent: their pool).",
        "fields": [_field("input", False), _field("original_output", True)],
        "questions": questions,
        "vectors": [],
        "metadata": [_metadata(n, "terms") for n in _TERMS]
        + [_metadata(n, kind) for n, kind in _NUMBERS],
        "allow_extra_metadata": False,
        "distribution": {"strategy": "overlap", "min_submitted": 1},
        "mapping": None,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def argilla_record(example: dict[str, Any]) -> dict[str, Any]:
    """One record as ``Record.to_dict`` writes it: fields, metadata, the reviewer's answers
    as suggestions (their agent is the reviewing pool)."""
    agent = f"hitl-gateway:{example.get('reviewer_pool') or 'unknown'}"

    def suggestion(value: Any) -> dict[str, Any]:
        return {"value": value, "score": None, "agent": agent}

    fields = {"original_output": _text(example.get("original_output"))}
    if example.get("input") is not None:
        fields["input"] = _text(example["input"])
    suggestions = {"verdict": suggestion(example["verdict"])}
    if example.get("edited_output") is not None:
        suggestions["correction"] = suggestion(_text(example["edited_output"]))
    if example.get("reject_reason"):
        suggestions["reject_reason"] = suggestion(example["reject_reason"])
    for dim, value in (example.get("grades") or {}).items():
        suggestions[_question(dim)] = suggestion(_grade_text(value))
    metadata = {n: example.get(n) for n in _TERMS if example.get(n) is not None}
    metadata.update({n: example[n] for n, _ in _NUMBERS if example.get(n) is not None})
    return {"id": f"{example['item_id']}:{example['decision_id']}", "fields": fields,
            "metadata": metadata, "suggestions": suggestions, "responses": {}, "vectors": {},
            "status": "pending", "_server_id": None}  # fmt: skip


def write_argilla(
    examples: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    name: str,
    rubrics: dict[str, dict[str, tuple[str, ...]]],
) -> int:
    """A directory ``rg.Dataset.from_disk(out_dir)`` imports into an Argilla server."""
    _prepared(out_dir, directory=True)
    config = out_dir / ".argilla"
    config.mkdir()
    settings = argilla_settings(_labels(examples, rubrics))
    dataset = {"id": None, "inserted_at": None, "updated_at": None, "name": name,
               "status": "draft", "guidelines": settings["guidelines"],
               "allow_extra_metadata": False, "distribution": settings["distribution"],
               "workspace_id": None, "last_activity_at": None}  # fmt: skip
    (config / "settings.json").write_bytes(orjson.dumps(settings))
    (config / "dataset.json").write_bytes(orjson.dumps(dataset))
    records = [argilla_record(e) for e in examples if e.get("verdict")]
    (out_dir / "records.json").write_bytes(orjson.dumps(records))
    return len(records)
