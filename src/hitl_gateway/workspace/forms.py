"""The workspace's forms: what the editor starts from, and the decision a submitted form
describes (the review API's ``DecisionBody``, so both are validated alike)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pydantic import ValidationError

from hitl_gateway.review.state import DecisionBody, first_error
from hitl_gateway.workspace.render import text_field


def editable(output: Any) -> dict[str, Any]:
    """What the editor starts from: the text of a text output, or the JSON of another."""
    key = text_field(output)
    if isinstance(output, str):
        return {"mode": "text", "key": "", "text": output}
    if key is not None:
        return {"mode": "text", "key": key, "text": output[key]}
    return {"mode": "json", "key": "",
            "text": orjson.dumps(output, option=orjson.OPT_INDENT_2).decode()}  # fmt: skip


def decision(form: dict[str, str]) -> DecisionBody:
    """The decision a form describes, or ValueError naming what is wrong with it."""
    verdict = form.get("verdict", "")
    grades = {k.removeprefix("grade:"): v for k, v in form.items() if k.startswith("grade:") and v}
    body: dict[str, Any] = {
        "decision_id": form.get("decision_id") or uuid.uuid4().hex,
        "verdict": verdict,
        "content_hash": form.get("content_hash", ""),
        "grades": grades,
        "notes": form.get("notes") or None,
    }
    if verdict == "edit":
        # A form sends a textarea's line breaks as CRLF: the output keeps its own LF.
        text = form.get("edited", "").replace("\r\n", "\n")
        mode, key = form.get("mode", "text"), form.get("key", "")
        if mode == "json":
            try:
                body["edited_output"] = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"the edited output is not JSON: {exc}") from exc
        else:
            body["edited_output"] = {key: text} if key else text
    if verdict == "reject":
        reason = " — ".join(x for x in (form.get("reason_choice"), form.get("reason")) if x)
        body["reason"] = reason or None
    try:
        return DecisionBody.model_validate(body)
    except ValidationError as exc:
        raise ValueError(first_error(exc)) from exc
