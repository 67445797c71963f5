"""Training examples read back for export: version 1 records in the current shape, the
selection by decision time and domain."""

from __future__ import annotations

import orjson

from hitl_gateway.training_export import FIELDS, Selection, normalized


def test_a_version_1_record_reads_in_the_current_shape_without_the_reviewer() -> None:
    v1 = {"type": "judge_disagreement", "item_id": "i", "domain": "d", "output": {"t": 1},
          "reviewer": "gia", "human_grade": "C"}  # fmt: skip
    example = normalized(orjson.dumps(v1), 1_795_000_000_000)
    assert example is not None
    assert set(example) == set(FIELDS)
    assert example["schema_version"] == 1
    assert example["original_output"] == {"t": 1}
    assert example["reviewer"] is None  # written before the policy could say otherwise
    assert example["decided_at_ms"] == 1_795_000_000_000  # the record's own time


def test_what_is_not_an_example_is_skipped() -> None:
    assert normalized(b"not json", 0) is None
    assert normalized(b"[1]", 0) is None
    assert normalized(b'{"type": "review"}', 0) is None


def test_selection_by_decision_time_and_domain() -> None:
    example = {"decided_at_ms": 1_000, "domain": "a"}
    assert Selection(since_ms=1_000, until_ms=1_001).takes(example)
    assert not Selection(until_ms=1_000).takes(example)
    assert not Selection(domains=frozenset({"b"})).takes(example)
