"""The learning loop against the real broker and Redis: items reviewed through the API
become training examples that stand on their own (input, model, confidence, correction,
pool, times), the active-learning queue lists the most uncertain first, and
``training export`` writes JSONL, a Hugging Face dataset and an Argilla dataset that the real
``datasets`` and ``argilla`` libraries load."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import argilla as rg
import datasets
import orjson
import pytest

from hitl_gateway import cli, training_export
from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import ReviewSettings

from .gateways import ApiStack, serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, produce, read_all, wait_until

pytestmark = pytest.mark.integration

GRANTS = {"ana": ["clinicians"], "nia": ["annotators"]}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ApiStack]:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={"review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml")}
    )
    async with serving(settings) as (gateway, http):
        yield ApiStack(settings, gateway, tokens, http)


async def _decide(s: ApiStack, who: str, item: dict[str, Any], **body: Any) -> None:
    body = {"decision_id": uuid.uuid4().hex, "content_hash": item["content_hash"], **body}
    url = f"/v1/items/{item['item_id']}/decisions"
    response = await s.http.post(url, json=body, headers=s.auth(who))
    assert response.status_code == 200, response.text


async def _reviewed(s: ApiStack) -> float:
    """Three clinical summaries (approved, edited, rejected) and three ticket labels (active
    learning, most uncertain first); the time before the first decision (ms)."""
    clinical = [
        {"id": f"c{n}", "domain": "clinical-summaries", "confidence": 0.9, "model": "summarizer",
         "model_version": "2026-11", "language": "en", "metadata": {"site": "north"},
         "input": {"encounter": f"patient {n}: chest pain"}, "output": {"text": f"summary {n}"},
         "created_at": "2026-12-01T09:00:00Z"}
        for n in range(3)
    ]  # fmt: skip
    tickets = [
        {"id": f"t-{c}", "domain": "ticket-classifier", "confidence": c, "model": "router",
         "input": f"ticket text {c}", "output": {"queue": "billing"}}
        for c in (0.5, 0.05, 0.3)
    ]  # fmt: skip
    await produce(
        s.settings.topics.outputs, [(r["id"].encode(), orjson.dumps(r)) for r in clinical + tickets]
    )
    since = time.time() * 1000
    held = [await s.item("ana", f"c{n}") for n in range(3)]
    for t in tickets:
        await s.item("nia", t["id"])
    url = "/v1/pools/annotators/items?order=uncertainty"
    page = (await s.http.get(url, headers=s.auth("nia"))).json()
    # Least confident first (band [0, 0.6]): 0.05, then 0.3, then 0.5.
    assert [i["item_id"] for i in page["items"]] == ["t-0.05", "t-0.3", "t-0.5"]
    assert [round(i["uncertainty"], 3) for i in page["items"]] == [0.917, 0.5, 0.167]
    await _decide(s, "ana", held[0], verdict="approve", grades={"accuracy": 5})
    await _decide(s, "ana", held[1], verdict="edit", edited_output={"text": "fixed"},
                  grades={"accuracy": 3}, notes="dose")  # fmt: skip
    await _decide(s, "ana", held[2], verdict="reject", reason="unsafe advice")
    for item in page["items"]:
        await _decide(s, "nia", item, verdict="edit", edited_output={"queue": "refunds"},
                      grades={"label": "incorrect"})  # fmt: skip
    return since


async def test_reviews_become_examples_exported_for_datasets_and_argilla(
    stack: ApiStack, tmp_path: Path
) -> None:
    s = stack
    since_ms = await _reviewed(s)

    async def six() -> bool:
        return len(await read_all(s.settings.topics.training)) >= 6

    await wait_until(six, timeout_s=30)
    examples = {orjson.loads(r.value)["item_id"]: orjson.loads(r.value)
                for r in await read_all(s.settings.topics.training)}  # fmt: skip
    edit = examples["c1"]
    assert edit["schema_version"] == 2
    assert edit["input"] == {"encounter": "patient 1: chest pain"}
    assert (edit["model"], edit["model_version"]) == ("summarizer", "2026-11")
    assert edit["confidence"] == 0.9
    assert edit["original_output"] == {"text": "summary 1"}
    assert edit["edited_output"] == {"text": "fixed"}
    assert (edit["reviewer_pool"], edit["reviewer"]) == ("clinicians", None)
    assert edit["held_at_ms"] <= edit["decided_at_ms"]
    assert examples["c2"]["reject_reason"] == "unsafe advice"
    label = examples["t-0.05"]
    assert (label["rule"], label["reviewer_pool"]) == ("active_learning", "annotators")
    assert label["input"] == "ticket text 0.05"
    assert label["uncertainty"] == pytest.approx((0.6 - 0.05) / 0.6, abs=1e-6)

    # JSON lines: one domain, within the time range.
    start = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(since_ms / 1000 - 60))}Z"
    for fmt, name in (("jsonl", "clinical.jsonl"), ("hf", "hf"), ("argilla", "argilla")):
        only = ["--domain", "clinical-summaries"] if fmt == "jsonl" else []
        argv = ["training", "export", "--format", fmt, "--out", str(tmp_path / name)]
        args = cli._parser().parse_args([*argv, "--since", start, *only])
        assert await training_export.run(s.settings, args) == 0

    lines = [orjson.loads(x) for x in (tmp_path / "clinical.jsonl").read_bytes().splitlines()]
    assert sorted(e["item_id"] for e in lines) == ["c0", "c1", "c2"]
    assert all(set(e) == set(training_export.FIELDS) for e in lines)

    # Hugging Face: the directory loads with datasets, one row per example.
    loaded = datasets.load_dataset(str(tmp_path / "hf"), split="train")
    assert loaded.num_rows == 6
    rows = {r["item_id"]: r for r in loaded}
    assert json.loads(rows["c1"]["edited_output_json"]) == {"text": "fixed"}
    assert json.loads(rows["c1"]["input_json"]) == {"encounter": "patient 1: chest pain"}
    assert (rows["c2"]["verdict"], rows["c2"]["reject_reason"]) == ("reject", "unsafe advice")
    assert rows["t-0.3"]["rule"] == "active_learning"
    assert rows["c0"]["reviewer"] is None
    assert loaded.features["confidence"].dtype == "float64"
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "examples: 6 (1 approved, 4 edited, 1 rejected" in card

    # Argilla: its client reads the settings and records and they fit each other.
    with _argilla_client():
        settings = rg.Settings.from_json(tmp_path / "argilla" / ".argilla" / "settings.json")
        raw = json.loads((tmp_path / "argilla" / "records.json").read_text())
        records = [rg.Record.from_dict(r) for r in raw]
    assert len(records) == 6
    fields = {f.name: f for f in settings.fields}
    questions = {q.name: q for q in settings.questions}
    metadata = {m.name for m in settings.metadata}
    assert questions["grade_accuracy"].labels == ["5", "4", "3", "2", "1"]  # routing.yaml's
    for record in records:
        assert set(record.fields.to_dict()) <= set(fields)
        assert all(name in record.fields.to_dict() for name, f in fields.items() if f.required)
        assert set(record.metadata.to_dict()) <= metadata
        for suggestion in record.suggestions:
            question = questions[suggestion.question_name]
            if isinstance(question, rg.LabelQuestion):
                assert suggestion.value in question.labels
    by_id = {r.id: r for r in records}
    edited = next(r for rid, r in by_id.items() if rid.startswith("c1:"))
    assert edited.suggestions["correction"].value == '{"text":"fixed"}'
    assert edited.suggestions["verdict"].agent == "hitl-gateway:clinicians"
    assert edited.fields["input"] == '{"encounter":"patient 1: chest pain"}'

    # A second export into the same place is refused, naming it.
    args = cli._parser().parse_args(["training", "export", "--format", "hf", "--out",
                                     str(tmp_path / "hf")])  # fmt: skip
    with pytest.raises(ConfigError, match="is not an empty directory"):
        await training_export.run(s.settings, args)


class _Me(BaseHTTPRequestHandler):
    """Argilla's client checks its server's ``/api/v1/me`` when it starts; nothing else is
    asked of the server here (the records are read and checked by the client's classes)."""

    def do_GET(self) -> None:
        body = orjson.dumps({"id": str(uuid.uuid4()), "username": "export-check",
                             "role": "owner", "first_name": "export",
                             "inserted_at": "2026-01-01T00:00:00",
                             "updated_at": "2026-01-01T00:00:00"})  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class _argilla_client:
    def __enter__(self) -> rg.Argilla:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Me)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{self._server.server_port}"
        return rg.Argilla(api_url=url, api_key="export-check")

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
