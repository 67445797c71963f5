"""No single record, edit or decision stops or wedges the gateway (the real broker, Redis
and review API): non-finite numbers, oversized edits and bodies, decision ids reused across
items and reviewers, and two records with one id. Each test failed on the code before the
fix: a crash loop, a partition retried forever, a result read from another item, a lost hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hitl_gateway.models import InputRecord, Route
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import decide
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.settings import LimitSettings, ReviewSettings

from .gateways import serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, produce, read_all, wait_until
from .test_review import GRANTS, Stack

LIMIT = 65_536  # max_record_bytes in these tests: small records make the limits reachable


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    grants = {**GRANTS, "ops": ["nurses-only"]}
    tokens = write_reviewers(tmp_path / "reviewers.yaml", grants, operators=["ops"])
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={
            "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
            "limits": LimitSettings(max_record_bytes=LIMIT),
        }
    )
    async with serving(settings) as (gateway, http):
        yield Stack(settings, gateway, tokens, http)


def _sampled_id(domain: str) -> str:
    """An id the engine samples for review in ``domain`` (sampling is by id)."""
    policies = load_policy_set(
        CONFIGS / "policies", CONFIGS / "pools.yaml", CONFIGS / "routing.yaml"
    )
    for n in range(100_000):
        record = InputRecord(id=f"s-{n}", domain=domain, confidence=0.99)
        d = decide(record, policies, timestamp_ms=int(time.time() * 1000), budgets=MemoryLedger())
        if d.route is Route.DELIVER_AND_REVIEW:
            return record.id
    raise AssertionError(f"no sampled id found for {domain}")


async def _dead_letters(s: Stack) -> dict[bytes, str]:
    found = await read_all(s.settings.topics.deadletter)
    return {r.key: dict(r.headers)["hitl.dlq.reason"].decode() for r in found}


def _running(s: Stack) -> None:
    assert s.gateway.ready(), "the gateway stopped (or stalled)"


async def test_non_finite_numbers_are_dead_letters_and_the_stream_goes_on(stack: Stack) -> None:
    s = stack
    sampled = _sampled_id("engineering-answers")
    await produce(
        s.settings.topics.outputs,
        [
            # Blind-sampled: its review task used to be built by parsing the bytes again.
            (b"nan", b'{"id": "%s", "domain": "engineering-answers", "confidence": 0.99, '
                     b'"output": {"score": NaN}}' % sampled.encode()),
            # Held: the item view and the close path used to parse it again.
            (b"big", b'{"id": "big", "domain": "clinical-summaries", "confidence": 0.9, '
                     b'"output": {"lab": 1e400}}'),
            (b"inf", b'{"id": "inf", "domain": "support-chat", "output": -Infinity}'),
        ],
    )  # fmt: skip
    good = await s.hold("good", "clinical-summaries")
    assert await _dead_letters(s) == {b"nan": "not_json", b"big": "not_json", b"inf": "not_json"}
    approved = await s.decide("ana", "good", verdict="approve", content_hash=good["content_hash"])
    assert approved.status_code == 200
    _running(s)
    for topic in (s.settings.topics.delivered, s.settings.topics.review_tasks,
                  s.settings.topics.training, s.settings.topics.holds):  # fmt: skip
        for record in await read_all(topic):
            if record.value is not None:
                orjson.loads(record.value)  # everything published is strict JSON


async def test_an_oversized_edit_is_refused_and_never_wedges_its_partition(stack: Stack) -> None:
    s = stack
    big = await s.hold("big-edit", "clinical-summaries", output={"text": "o" * 60_000})
    h = big["content_hash"]
    # The edited release would exceed the record limit: 413 before anything is published.
    too_big = await s.decide("ana", "big-edit", verdict="edit", content_hash=h,
                             edited_output={"text": "e" * 70_000})  # fmt: skip
    assert too_big.status_code == 413, too_big.text
    assert f"limit {LIMIT}" in too_big.json()["detail"]
    # A body past what the server reads at all: 413 naming the limit, not 503 "retry".
    huge = await s.http.post(
        "/v1/items/big-edit/decisions",
        content=b'{"edited_output": "' + b"x" * 10_000_000 + b'"}',
        headers={**s.auth("ana"), "content-type": "application/json"},
    )
    assert huge.status_code == 413, huge.text
    assert "limit" in huge.json()["detail"]

    # Over the topic, the same edit is refused (audited, 413 result) and the partition moves.
    decision = {
        "decision_id": "topic-big",
        "item_id": "big-edit",
        "reviewer": "ana",
        "verdict": "edit",
        "content_hash": h,
        "edited_output": {"text": "e" * 70_000},
    }
    await produce(s.settings.topics.review_decisions, [(b"big-edit", orjson.dumps(decision))])

    async def refused() -> bool:
        got = await s.http.get("/v1/items/big-edit/decisions/topic-big", headers=s.auth("ana"))
        return got.status_code == 200 and got.json()["refusal"] == "too_large"

    await wait_until(refused, timeout_s=30)
    # An edit that fits is applied; its training record, which would carry both 60 KB
    # outputs, refers to the original instead.
    edited = await s.decide("ana", "big-edit", verdict="edit", content_hash=h,
                            edited_output={"text": "e" * 60_000})  # fmt: skip
    assert (edited.status_code, edited.json()["state"]) == (200, "edited")
    training = [orjson.loads(r.value) for r in await read_all(s.settings.topics.training)]
    assert len(training) == 1
    assert training[0]["original_output"] is None
    assert training[0]["original_output_ref"]["content_hash"] == h
    assert training[0]["edited_output"] == {"text": "e" * 60_000}
    trail = [orjson.loads(r.value) for r in await read_all(s.settings.topics.audit)]
    assert any(e.get("refusal") == "too_large" for e in trail)
    _running(s)


async def test_request_bodies_are_bounded_before_parsing(stack: Stack) -> None:
    s = stack
    held = await s.hold("rb", "clinical-summaries")
    url, auth = "/v1/items/rb/decisions", s.auth("ana")
    body: dict[str, Any] = {"decision_id": "g", "verdict": "approve",
                            "content_hash": held["content_hash"]}  # fmt: skip
    many = await s.http.post(url, json={**body, "grades": {f"k{n}": 1 for n in range(60)}},
                             headers=auth)  # fmt: skip
    assert many.status_code == 422
    assert "grades has 60 entries, limit 50" in many.text
    unknown = await s.http.post(
        url, content=orjson.dumps({**body, **{f"x{n}": 1 for n in range(5_000)}}), headers=auth
    )
    assert unknown.status_code == 422
    assert "5003 fields" in unknown.text
    assert len(unknown.content) < 1_000  # a short answer, not one error per field
    # A million-key body is refused on its size; 10,000 keys within the size on their count.
    million = orjson.dumps({**body, "grades": {f"k{n}": 1 for n in range(1_000_000)}})
    stalls = []
    for payload, status in ((million, 413),
                            (orjson.dumps({**body, "grades": {f"{n}": 1 for n in range(10_000)}}),
                             422)):  # fmt: skip
        started = time.monotonic()
        post = asyncio.create_task(s.http.post(url, content=payload, headers=auth))
        worst = 0.0
        while not post.done():
            t = time.monotonic()
            assert (await s.http.get("/healthz")).status_code == 200
            worst = max(worst, time.monotonic() - t)
        assert (await post).status_code == status
        stalls.append((len(payload), round(time.monotonic() - started, 3), round(worst, 3)))
    print("bodies (bytes, answered in s, slowest /healthz in s):", stalls)
    assert (await s.decide("ana", "rb", **body)).status_code == 200


async def test_decision_ids_are_scoped_to_their_item_and_reviewer(stack: Stack) -> None:
    s = stack
    a = await s.hold("A", "clinical-summaries")
    b = await s.hold("B", "clinical-summaries")
    c = await s.hold("C", "clinical-summaries")
    first = await s.decide("ana", "A", verdict="approve", content_hash=a["content_hash"],
                           decision_id="same")  # fmt: skip
    assert first.status_code == 200
    # The same id on another item is another decision: applied to B, not "approved" from A.
    other = await s.decide("ana", "B", verdict="reject", content_hash=b["content_hash"],
                           decision_id="same", reason="wrong")  # fmt: skip
    assert (other.status_code, other.json()["state"]) == (200, "rejected")
    assert (await s.http.get("/v1/items/B", headers=s.auth("ana"))).status_code == 404

    # Results are read by their reviewer, or an operator.
    mine = await s.http.get("/v1/items/A/decisions/same", headers=s.auth("ana"))
    assert (mine.status_code, mine.json()["state"]) == (200, "approved")
    theirs = await s.http.get("/v1/items/A/decisions/same?reviewer=ana", headers=s.auth("eve"))
    assert theirs.status_code == 403
    assert (
        await s.http.get("/v1/items/A/decisions/same", headers=s.auth("eve"))
    ).status_code == 404
    ops = await s.http.get("/v1/items/A/decisions/same?reviewer=ana", headers=s.auth("ops"))
    assert (ops.status_code, ops.json()["reviewer"]) == (200, "ana")

    # A refused reviewer cannot squat an id: the rightful reviewer's decision still applies.
    squat = await s.decide("eve", "C", verdict="approve", content_hash=c["content_hash"],
                           decision_id="sq")  # fmt: skip
    assert squat.status_code == 403
    rightful = await s.decide("ana", "C", verdict="approve", content_hash=c["content_hash"],
                              decision_id="sq")  # fmt: skip
    assert (rightful.status_code, rightful.json()["state"]) == (200, "approved")
    # Nor is anyone but the closing reviewer told "already applied" for a closing id.
    late = await s.decide("leo", "C", verdict="approve", content_hash=c["content_hash"],
                          decision_id="sq")  # fmt: skip
    assert late.status_code == 409
    delivered = sorted(r.key for r in await read_all(s.settings.topics.delivered))
    assert delivered == [b"A", b"C"]


async def test_two_records_with_one_id_reach_one_outcome_each(stack: Stack) -> None:
    s = stack
    one = orjson.dumps({"id": "dup", "domain": "clinical-summaries", "confidence": 0.9,
                        "output": {"text": "first"}})  # fmt: skip
    other = orjson.dumps({"id": "dup", "domain": "clinical-summaries", "confidence": 0.9,
                          "output": {"text": "second"}})  # fmt: skip
    # Different keys: other partitions. The first is held before the others arrive (which
    # record claims an id first is otherwise a race between partitions).
    sent = await produce(s.settings.topics.outputs, [(b"k-a", one)])
    held = await s.item("ana", "dup")
    assert held["record"]["output"] == {"text": "first"}
    await produce(s.settings.topics.outputs, [(b"k-b", other), (b"k-c", one)])  # c: a retry

    async def all_routed() -> bool:
        return s.gateway.pipeline.committed_records >= 3

    await wait_until(all_routed, timeout_s=30)
    dead = await read_all(s.settings.topics.deadletter)
    assert [(r.key, dict(r.headers)["hitl.dlq.reason"]) for r in dead] == [
        (b"k-b", b"duplicate_id")
    ]
    assert (
        f":{sent[0].partition}:{sent[0].offset}".encode()
        in dict(dead[0].headers)["hitl.dlq.message"]
    )
    assert s.metric("hitl_records_routed_total", domain="-", route="duplicate") == 1
    holds = await read_all(s.settings.topics.holds)
    assert [r.key for r in holds] == [b"dup"], "one hold, not two"
    tasks = await read_all(s.settings.topics.review_tasks)
    assert [r.key for r in tasks] == [b"dup"]
    approve = await s.decide("ana", "dup", verdict="approve", content_hash=held["content_hash"])
    assert approve.status_code == 200
    holds = await read_all(s.settings.topics.holds)
    assert [(r.key, r.value is None) for r in holds] == [(b"dup", False), (b"dup", True)]
    delivered = await read_all(s.settings.topics.delivered)
    assert [r.value for r in delivered] == [one]
    _running(s)
