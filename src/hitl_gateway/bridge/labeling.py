"""What the Label Studio bridge shows and reads, pure: a labeling configuration from a
policy rubric, a held item as a Label Studio task, and a submitted annotation as a decision
for the decisions topic (or the reason it cannot be one)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

from hitl_gateway.codec import read_json
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import blind_view
from hitl_gateway.policy.schema import Rubric

VERDICTS = ("approve", "edit", "reject")


def grade_control(dimension: str) -> str:
    """The control name of a rubric dimension's grades (``overall`` for the rubric's own)."""
    return f"grade_{dimension}"


def _choices(name: str, values: tuple[str, ...], hints: dict[str, str], *, required: bool) -> str:
    options = "".join(
        f"<Choice value={quoteattr(v)}"
        + (f" hint={quoteattr(hints[v])}" if v in hints else "")
        + "/>"
        for v in values
    )
    need = ' required="true"' if required else ""
    return (f'<Choices name={quoteattr(name)} toName="output" choice="single-radio"'
            f' showInline="true"{need}>{options}</Choices>')  # fmt: skip


def label_config(rubric: Rubric | None) -> str:
    """The project's labeling interface: the output, the verdict, an editor for edits, the
    reject reasons, one choice per rubric dimension (and the overall grade), and notes. The
    judge's verdict is a task field, empty on blind items."""
    parts = [
        '<View>',
        '<Header value="$domain: $item_id"/>',
        '<Text name="reasons" value="$reasons"/>',
        '<Text name="output" value="$output"/>',
        '<Text name="judge" value="$judge"/>',
        _choices("verdict", VERDICTS, {}, required=True),
        '<View visibleWhen="choice-selected" whenTagName="verdict" whenChoiceValue="edit">',
        '<Header value="Edited output (JSON when the output is JSON)" size="6"/>',
        '<TextArea name="edited_output" toName="output" value="$output" editable="true"'
        ' maxSubmissions="1" rows="8"/>',
        '</View>',
    ]  # fmt: skip
    if rubric is not None and rubric.reject_reasons:
        parts += [
            '<View visibleWhen="choice-selected" whenTagName="verdict" whenChoiceValue="reject">',
            _choices("reject_reason", rubric.reject_reasons, {}, required=False),
            "</View>",
        ]
    if rubric is not None:
        for name, dim in rubric.dimensions.items():
            parts.append(f'<Header value={quoteattr(f"{name}: {dim.description}")} size="6"/>')
            parts.append(_choices(grade_control(name), dim.grades, dim.definitions, required=False))
        if rubric.grades:
            parts.append('<Header value="overall" size="6"/>')
            parts.append(_choices(grade_control("overall"), rubric.grades, {}, required=False))
    parts += ['<TextArea name="notes" toName="output" maxSubmissions="1" rows="2"'
              ' placeholder="notes (why, in your words)"/>', "</View>"]  # fmt: skip
    return "".join(parts)


def instructions(rubric_name: str | None, rubric: Rubric | None) -> str:
    """The rubric as the project's instructions (HTML, escaped)."""
    if rubric is None:
        return f"<p>Rubric: {html.escape(rubric_name or 'none')}</p>"
    out = [f"<h3>{html.escape(rubric_name or '')}</h3>",
           f"<p>{html.escape(rubric.criteria).replace(chr(10), '<br>')}</p>"]  # fmt: skip
    for name, dim in rubric.dimensions.items():
        grades = "".join(
            f"<li><b>{html.escape(g)}</b> {html.escape(dim.definitions.get(g, ''))}</li>"
            for g in dim.grades
        )
        out.append(f"<h4>{html.escape(name)}</h4><p>{html.escape(dim.description)}</p>")
        out.append(f"<ul>{grades}</ul>")
    return "".join(out)


def task_data(meta: HoldMeta, value: bytes) -> dict[str, Any]:
    """A held item as the reviewer sees it: blind items without the judge's verdict (the
    review API's view). Nothing marks a gold item."""
    record = blind_view(value) if meta.blind else read_json(value)
    output = record.get("output")
    is_text = isinstance(output, str)
    judge = "" if meta.blind or not meta.judge else _judge_text(meta.judge)
    reasons = "; ".join(f"{r.get('rule')}: {r.get('detail')}" for r in meta.reasons)
    deadline = meta.sla_deadline_ms
    return {
        "item_id": meta.item_id,
        "domain": meta.domain,
        "content_hash": meta.content_hash,
        "output": output if is_text else orjson.dumps(output, option=orjson.OPT_INDENT_2).decode(),
        "output_format": "text" if is_text else "json",
        "reasons": reasons,
        "judge": judge,
        "deadline": datetime.fromtimestamp(deadline / 1000, UTC).isoformat() if deadline else "",
    }


def _judge_text(judge: dict[str, Any]) -> str:
    shown = ", ".join(f"{k} {judge[k]}" for k in ("grade", "score", "model") if k in judge)
    return f"judge: {shown}"


@dataclass(frozen=True, slots=True)
class Unusable:
    """An annotation that cannot become a decision, and why (logged once, left in place)."""

    reason: str


def _values(result: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for region in result:
        value = region.get("value") or {}
        picked = value.get("choices") or value.get("text") or []
        found.setdefault(str(region.get("from_name")), []).extend(str(v) for v in picked)
    return found


def decision(
    annotation: dict[str, Any], data: dict[str, Any], reviewer: str, decision_id: str
) -> dict[str, Any] | Unusable:
    """The decision an annotation of the task ``data`` makes, for the decisions topic."""
    values = _values(annotation.get("result") or [])
    verdicts = values.get("verdict") or []
    if len(verdicts) != 1 or verdicts[0] not in VERDICTS:
        return Unusable(f"verdict must be one of {', '.join(VERDICTS)}, got {verdicts}")
    verdict = verdicts[0]
    body: dict[str, Any] = {"decision_id": decision_id, "item_id": data["item_id"],
                            "reviewer": reviewer, "verdict": verdict,
                            "content_hash": data["content_hash"]}  # fmt: skip
    if verdict == "edit":
        texts = values.get("edited_output") or []
        if not texts:
            return Unusable("an edit needs the edited output")
        edited: Any = texts[-1]
        if data.get("output_format") == "json":
            try:
                edited = orjson.loads(edited)
            except orjson.JSONDecodeError as exc:
                return Unusable(f"the edited output is not JSON: {exc}")
        body["edited_output"] = edited
    notes = " ".join(values.get("notes") or []) or None
    if verdict == "reject":
        reasons = values.get("reject_reason") or []
        body["reason"] = "; ".join([*reasons, *([notes] if notes else [])]) or None
    grades = {
        name.removeprefix("grade_"): picked[0]
        for name, picked in values.items()
        if name.startswith("grade_") and name != grade_control("overall") and picked
    }
    if grades:
        body["grades"] = grades
    overall = values.get(grade_control("overall"))
    if overall:
        body["grade"] = overall[0]
    if notes:
        body["notes"] = notes
    return body
