"""Review tasks for an existing hold (adjudication, escalation): the schema routing.py
publishes for new holds, rebuilt from the hold's metadata."""

from __future__ import annotations

from typing import Any

import orjson

from hitl_gateway.codec import read_json
from hitl_gateway.sink import Outgoing

TASK_SCHEMA_VERSION = 1


def blind_view(value: bytes) -> dict[str, Any]:
    """A held record as a blind reviewer sees it (task or API): without the judge's grade,
    which the hold keeps for calibration."""
    body: dict[str, Any] = read_json(value)
    body.pop("judge", None)
    return body


def embedded(value: bytes) -> Any:
    """A held record to embed in a task as it is, or as read again when it is not strict
    JSON (a hold written before the codec's strict contract): tasks are always JSON."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return read_json(value)
    return orjson.Fragment(value)


def hold_task(
    topic: str, meta: dict[str, Any], value: bytes, *, rule: str, detail: str, at_ms: int
) -> Outgoing:
    task = {
        "type": "review_task",
        "schema_version": TASK_SCHEMA_VERSION,
        "item_id": meta["item_id"],
        "domain": meta["domain"],
        "route": "hold",
        "blocking": True,
        "pool": meta["pool"],
        "rule": rule,
        "reasons": [{"rule": rule, "detail": detail}],
        "reviewers": 1 if meta.get("stage") == "adjudication" else meta["reviewers"],
        "rubric": meta.get("rubric"),
        "deadline_ms": meta.get("sla_deadline_ms"),
        "blind": False,
        "content_hash": meta["content_hash"],
        "policy_version": meta.get("policy_version"),
        "source": meta.get("source"),
        "created_at_ms": at_ms,
        "record": embedded(value),
    }
    return Outgoing(topic, orjson.dumps(task), meta["item_id"].encode(), [])
