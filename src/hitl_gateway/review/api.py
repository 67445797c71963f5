"""The review API: a pool's queue, one item, and decisions (FastAPI, in the gateway's loop).

A decision is published to the decisions topic, on the partition of the item's hold, and
applied there by the partition's owner like any decision from the topic: one code path.
The API waits for the recorded result and answers with its status (200 applied, 202 vote
recorded or still pending, 4xx refused).
"""

# FastAPI resolves the dependency annotations below at import: no postponed annotations here.

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, JsonValue

from hitl_gateway.errors import InfrastructureError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.review.auth import ANY, Reviewer, Reviewers
from hitl_gateway.review.state import DecisionBody, DecisionRequest
from hitl_gateway.review.tasks import blind_view
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Publisher

T = TypeVar("T")
_bearer = HTTPBearer(auto_error=False)
ItemId = Annotated[str, Path(min_length=1, max_length=4_096)]


class DecisionResult(BaseModel):
    decision_id: str
    status: int
    state: str
    refusal: str | None = None
    message: str = ""


class ItemView(BaseModel):
    item_id: str
    domain: str
    pool: str
    state: str
    blocking: bool
    stage: str
    reviewers: int
    votes: int
    rubric: str | None
    sla_deadline_ms: int | None
    held_at_ms: int
    content_hash: str
    reasons: list[dict[str, Any]]
    blind: bool = False  # the judge's grade is withheld from the record
    record: JsonValue = None


class QueuePage(BaseModel):
    pool: str
    total: int
    offset: int
    items: list[ItemView]


def _view(meta: dict[str, Any], value: bytes | None = None) -> ItemView:
    record: Any = None
    if value is not None:
        record = blind_view(value) if meta.get("blind") else orjson.loads(value)
    return ItemView(
        item_id=meta["item_id"],
        domain=meta["domain"],
        pool=meta["pool"],
        state=meta.get("state", "pending"),
        blocking=meta.get("blocking", True),
        stage=meta.get("stage", "review"),
        reviewers=meta["reviewers"],
        votes=len(meta.get("votes", ())),
        rubric=meta.get("rubric"),
        sla_deadline_ms=meta.get("sla_deadline_ms"),
        held_at_ms=meta["held_at_ms"],
        content_hash=meta["content_hash"],
        reasons=meta.get("reasons", []),
        blind=bool(meta.get("blind")),
        record=record,
    )


def review_router(
    settings: Settings, index: HoldIndex, reviewers: Reviewers, publisher: Publisher
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["review"])

    def reviewer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Reviewer:
        found = reviewers.authenticate(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )
        return found

    Who = Annotated[Reviewer, Depends(reviewer)]

    @router.get("/pools/{pool}/items", response_model=QueuePage)
    async def list_queue(
        pool: Annotated[str, Path(min_length=1, max_length=64)],
        who: Who,
        order: Literal["deadline", "age"] = "deadline",
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> QueuePage:
        """A page of a pool's held items, nearest SLA deadline (or oldest) first."""
        if pool not in who.pools and ANY not in who.pools:
            raise HTTPException(403, f"{who.id} is not granted pool {pool}")
        # A reviewer granted some domains only pages and counts among those domains' items.
        domains = None if ANY in who.domains else who.domains
        page = index.queue(pool, order=order, offset=offset, limit=limit, domains=domains)
        total, metas = await _guard(page)
        return QueuePage(pool=pool, total=total, offset=offset, items=[_view(m) for m in metas])

    @router.get("/items/{item_id}", response_model=ItemView)
    async def show_item(item_id: ItemId, who: Who) -> ItemView:
        """One held item with the record under review and the content hash to decide on."""
        held = await _guard(index.get(item_id))
        if held is None:
            raise HTTPException(404, f"no held item {item_id}")
        if not who.may_review(held.meta["pool"], held.meta["domain"]):
            raise HTTPException(403, f"{who.id} may not review pool {held.meta['pool']}")
        return _view(held.meta, held.value)

    @router.post(
        "/items/{item_id}/decisions",
        response_model=DecisionResult,
        responses={202: {"model": DecisionResult}, 403: {}, 404: {}, 409: {}, 503: {}},
    )
    async def decide(
        item_id: ItemId, body: DecisionBody, who: Who, request: Request
    ) -> JSONResponse:
        """Approve, edit or reject a held item. Idempotent per decision_id."""
        previous = await _guard(index.result(body.decision_id))
        if previous is None:
            decision = DecisionRequest(item_id=item_id, reviewer=who.id, **body.model_dump())
            held = await _guard(index.get(item_id))
            await _guard(
                publisher.publish(
                    settings.topics.review_decisions,
                    decision.model_dump_json().encode(),
                    item_id.encode(),
                    held.partition if held is not None else None,
                )
            )
            previous = await _wait_for(index, body.decision_id, settings.review.decision_wait_s)
        if previous is None:
            pending = DecisionResult(
                decision_id=body.decision_id, status=202, state="submitted",
                message="accepted; not applied yet: poll GET /v1/decisions/{decision_id}",
            )  # fmt: skip
            return JSONResponse(pending.model_dump(), status_code=202)
        result = DecisionResult.model_validate(previous)
        return JSONResponse(result.model_dump(), status_code=result.status)

    @router.get("/decisions/{decision_id}", response_model=DecisionResult)
    async def decision_status(
        decision_id: Annotated[str, Path(min_length=1, max_length=128)], who: Who
    ) -> DecisionResult:
        found = await _guard(index.result(decision_id))
        if found is None:
            raise HTTPException(404, f"no result for decision {decision_id} (yet)")
        return DecisionResult.model_validate(found)

    return router


async def _wait_for(index: HoldIndex, decision_id: str, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while time.monotonic() < deadline:
        found = await _guard(index.result(decision_id))
        if found is not None:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return None


async def _guard(awaitable: Awaitable[T]) -> T:
    """Redis or Kafka unavailable: 503, never a 500."""
    try:
        return await awaitable
    except InfrastructureError as exc:
        raise HTTPException(503, f"temporarily unavailable: {exc}") from exc
