"""Submitting a reviewer's decision: the one path the review API and the workspace share.

The decision is published to the decisions topic on the partition of the item's hold and
applied there by the partition's owner like any decision from the topic; this waits for the
recorded result. Before publishing: an edit that would not fit is refused (413), and so is a
decision on an item whose seats are all leased by other reviewers (409); an OIDC reviewer's
grants are recorded for the applier (review/identities.py). After a result: the
reviewer's lease is released, and their day's work and time on item are counted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from hitl_gateway.holds import HoldIndex
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.models import HoldMeta
from hitl_gateway.review.auth import Reviewer
from hitl_gateway.review.identities import Identities
from hitl_gateway.review.leases import Leases
from hitl_gateway.review.limits import RequestLimiter
from hitl_gateway.review.signatures import DecisionSignatures
from hitl_gateway.review.state import DecisionBody, DecisionRequest, edited_value
from hitl_gateway.review.work import WorkLog
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Publisher
from hitl_gateway.verdicts import Verdict

# States after which the reviewer is done with the item (their lease is released).
_DONE = frozenset({"approved", "edited", "rejected", "pending", "adjudication", "duplicate"})


def seats(meta: HoldMeta) -> int:
    """How many reviewers may work the item at once: the distinct reviewers it still needs
    (one during adjudication)."""
    if meta.stage == "adjudication":
        return 1
    return max(1, meta.reviewers - len(meta.votes))


@dataclass(frozen=True, slots=True)
class Reviewing:
    """What submitting needs (the composition root builds it once)."""

    settings: Settings
    index: HoldIndex
    publisher: Publisher
    leases: Leases
    work: WorkLog
    metrics: GatewayMetrics
    limiter: RequestLimiter | None = None
    # Records what an OIDC reviewer's token granted, for the applier (review/identities.py).
    identities: Identities | None = None
    # Signs what the API publishes with the gateway's own key (None: signing is off).
    signatures: DecisionSignatures | None = None


async def submit(
    r: Reviewing, who: Reviewer, item_id: str, body: DecisionBody
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, result) of ``who``'s decision on ``item_id``. Idempotent per
    (item, reviewer, decision id). Raises ``HTTPException`` for what is refused before
    publishing; ``InfrastructureError`` when Kafka or Redis is unavailable."""
    previous = await r.index.result(item_id, who.id, body.decision_id)
    if previous is not None:
        return int(previous["status"]), previous
    held = await r.index.get(item_id)
    taken_ms: int | None = None
    if held is not None:
        live = (await r.leases.holders([item_id], int(time.time() * 1000))).get(item_id, [])
        mine = next((lease for lease in live if lease.reviewer == who.id), None)
        others = [lease for lease in live if lease.reviewer != who.id]
        if mine is None and len(others) >= seats(held.meta):
            names = ", ".join(lease.reviewer for lease in others)
            raise HTTPException(409, f"{item_id} is being reviewed by {names}: take another")
        taken_ms = mine.taken_ms if mine is not None else None
        if body.verdict is Verdict.EDIT:
            size = len(edited_value(held.value, body.edited_output))
            limit = r.settings.limits.max_record_bytes
            if size > limit:
                raise HTTPException(413, f"the edited record would be {size} bytes, limit {limit}")
    decision = DecisionRequest(item_id=item_id, reviewer=who.id, **body.model_dump())
    record = decision.model_dump_json().encode()
    limit = r.publisher.max_request_size - 1024  # room for the batch framing
    if len(record) > limit:
        raise HTTPException(413, f"the decision is {len(record)} bytes, limit {limit}")
    partition = held.partition if held is not None else None
    if r.identities is not None:
        await r.identities.remember(who)
    signed = r.signatures.sign(record, int(time.time() * 1000)) if r.signatures else None
    await r.publisher.publish(
        r.settings.topics.review_decisions, record, item_id.encode(), partition, signed
    )
    found = await _wait_for(r.index, (item_id, who.id, body.decision_id),
                            r.settings.review.decision_wait_s)  # fmt: skip
    if found is None:
        pending = {
            "decision_id": body.decision_id, "item_id": item_id, "reviewer": who.id,
            "status": 202, "state": "submitted", "refusal": None,
            "message": "accepted; not applied yet: poll GET "
            "/v1/items/{item_id}/decisions/{decision_id}",
        }  # fmt: skip
        return 202, pending
    if held is not None and found.get("state") in _DONE:
        await r.leases.release(item_id, who.id)
        seconds = (time.time() * 1000 - taken_ms) / 1000 if taken_ms is not None else None
        meta = held.meta
        if seconds is not None:
            r.metrics.observe_time_on_item(meta.pool, meta.rubric, body.verdict.value, seconds)
        await r.work.record(who.id, meta, body.verdict.value, str(found["state"]), seconds)
    return int(found["status"]), found


async def _wait_for(
    index: HoldIndex, key: tuple[str, str, str], timeout_s: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while time.monotonic() < deadline:
        found = await index.result(*key)
        if found is not None:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return None
