"""The review API: a pool's queue, one item, and decisions (FastAPI, in the gateway's loop).

A decision is published to the decisions topic, on the partition of the item's hold, and
applied there by the partition's owner like any decision from the topic: one code path.
The API waits for the recorded result and answers with its status (200 applied, 202 vote
recorded or still pending, 4xx refused). A decision id is the reviewer's idempotency key for
one item: results are kept per (item, reviewer, decision id) and read by that reviewer or an
operator only.

Request bodies are bounded before they are parsed (size, in the server; rubric grades and
nesting, here), and parsed by orjson: no request can hold the event loop the stream shares.
"""

# FastAPI resolves the dependency annotations below at import: no postponed annotations here.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, JsonValue, ValidationError

from hitl_gateway.codec import read_json
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.models import HoldMeta
from hitl_gateway.outputs import blind_view
from hitl_gateway.review.auth import ANY, Reviewer
from hitl_gateway.review.identities import Identities, Refused
from hitl_gateway.review.limits import RequestLimiter
from hitl_gateway.review.state import MAX_GRADES, DecisionBody
from hitl_gateway.review.submit import Reviewing, submit

T = TypeVar("T")
_bearer = HTTPBearer(auto_error=False)
ItemId = Annotated[str, Path(min_length=1, max_length=4_096)]


class DecisionResult(BaseModel):
    decision_id: str
    item_id: str | None = None
    reviewer: str | None = None
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
    uncertainty: float | None = None  # active learning: 1 most worth labelling
    record: JsonValue = None


class QueuePage(BaseModel):
    pool: str
    total: int
    offset: int
    items: list[ItemView]


def _view(meta: HoldMeta, value: bytes | None = None) -> ItemView:
    record: Any = None
    if value is not None:
        record = blind_view(value) if meta.blind else read_json(value)
    return ItemView(
        item_id=meta.item_id,
        domain=meta.domain,
        pool=meta.pool,
        state=meta.state,
        blocking=meta.blocking,
        stage=meta.stage,
        reviewers=meta.reviewers,
        votes=len(meta.votes),
        rubric=meta.rubric,
        sla_deadline_ms=meta.sla_deadline_ms,
        held_at_ms=meta.held_at_ms,
        content_hash=meta.content_hash,
        reasons=meta.reasons,
        blind=bool(meta.blind),
        uncertainty=meta.uncertainty,
        record=record,
    )


def authenticator(
    identities: Identities, limiter: RequestLimiter | None = None
) -> Callable[..., Awaitable[Reviewer]]:
    """The dependency that turns a bearer token (a reviewers-file token, or where OIDC is on
    the issuer's JWT) into its reviewer (401 when it proves nothing, 403 when it grants
    nothing here), within the reviewer's request rate (429 with Retry-After otherwise)."""

    async def reviewer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Reviewer:
        found = await guard(identities.authenticate(credentials.credentials if credentials
                                                    else None))  # fmt: skip
        if isinstance(found, Refused):
            challenge = 'Bearer error="invalid_token"' if credentials else "Bearer"
            raise HTTPException(found.status, found.message, {"WWW-Authenticate": challenge})
        if limiter is not None:
            wait_s = await guard(limiter.retry_after(found.id))
            if wait_s is not None:
                if limiter.metrics is not None:
                    limiter.metrics.api_requests_limited.inc()
                raise HTTPException(
                    429,
                    f"{found.id} made more than {limiter.requests} requests in"
                    f" {limiter.window_s:g} s: retry in {wait_s} s",
                    {"Retry-After": str(wait_s)},
                )
        return found

    return reviewer


def review_router(reviewing: Reviewing, identities: Identities) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["review"])
    index = reviewing.index
    reviewer = authenticator(identities, reviewing.limiter)

    Who = Annotated[Reviewer, Depends(reviewer)]

    @router.get("/pools/{pool}/items", response_model=QueuePage)
    async def list_queue(
        pool: Annotated[str, Path(min_length=1, max_length=64)],
        who: Who,
        order: Literal["deadline", "age", "uncertainty"] = "deadline",
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> QueuePage:
        """A page of a pool's held items, nearest SLA deadline (or oldest, or most uncertain)
        first."""
        if pool not in who.pools and ANY not in who.pools:
            raise HTTPException(403, f"{who.id} is not granted pool {pool}")
        # A reviewer granted some domains only pages and counts among those domains' items.
        domains = who.domains_in(pool)
        page = index.queue(pool, order=order, offset=offset, limit=limit, domains=domains)
        total, metas = await guard(page)
        return QueuePage(pool=pool, total=total, offset=offset, items=[_view(m) for m in metas])

    @router.get("/items/{item_id}", response_model=ItemView)
    async def show_item(item_id: ItemId, who: Who) -> ItemView:
        """One held item with the record under review and the content hash to decide on."""
        held = await guard(index.get(item_id))
        if held is None:
            raise HTTPException(404, f"no held item {item_id}")
        if not who.may_review(held.meta.pool, held.meta.domain):
            raise HTTPException(403, f"{who.id} may not review pool {held.meta.pool}")
        return _view(held.meta, held.value)

    @router.post(
        "/items/{item_id}/decisions",
        response_model=DecisionResult,
        responses={202: {"model": DecisionResult}, 403: {}, 404: {}, 409: {}, 413: {}, 503: {}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": DecisionBody.model_json_schema(ref_template="#/components/schemas/{model}")
        }}}},
    )  # fmt: skip
    async def decide(item_id: ItemId, who: Who, request: Request) -> JSONResponse:
        """Approve, edit or reject a held item. Idempotent per (item, reviewer, decision_id).
        409 while other reviewers hold every seat of the item (its leases)."""
        body = _decision_body(await request.body())
        status, found = await guard(submit(reviewing, who, item_id, body))
        result = DecisionResult.model_validate(found)
        return JSONResponse(result.model_dump(), status_code=status)

    @router.get("/items/{item_id}/decisions/{decision_id}", response_model=DecisionResult)
    async def decision_status(
        item_id: ItemId,
        decision_id: Annotated[str, Path(min_length=1, max_length=128)],
        who: Who,
        reviewer: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    ) -> DecisionResult:
        """The result of a decision on an item: the caller's own, or (operators only) the
        named reviewer's."""
        reviewer = reviewer or who.id
        if reviewer != who.id and not who.operator:
            raise HTTPException(403, f"{who.id} may read its own decisions only")
        found = await guard(index.result(item_id, reviewer, decision_id))
        if found is None:
            raise HTTPException(
                404, f"no result for decision {decision_id} of {reviewer} on {item_id} (yet)"
            )
        return DecisionResult.model_validate(found)

    return router


# Bounds on what a refused body costs: fields looked at, and errors sent back.
_MAX_FIELDS = 16
_MAX_ERRORS = 10


def _decision_body(raw: bytes) -> DecisionBody:
    """The request body, bounded before pydantic sees it: strict JSON parsed by orjson (the
    server has already bounded its size), at most ``MAX_GRADES`` grades. 422 names what is
    wrong."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not strict JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise HTTPException(422, "the body must be a JSON object")
    if len(parsed) > _MAX_FIELDS:
        raise HTTPException(422, f"the body has {len(parsed)} fields; a decision has at most 8")
    grades = parsed.get("grades")
    if isinstance(grades, dict) and len(grades) > MAX_GRADES:
        raise HTTPException(422, f"grades has {len(grades)} entries, limit {MAX_GRADES}")
    try:
        return DecisionBody.model_validate(parsed)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise HTTPException(422, errors[:_MAX_ERRORS]) from exc  # the first few say enough


async def guard(awaitable: Awaitable[T]) -> T:
    """Redis or Kafka unavailable: 503 with a retry hint, never a 500."""
    try:
        return await awaitable
    except InfrastructureError as exc:
        detail = f"temporarily unavailable, retry (with the same decision_id): {exc}"
        raise HTTPException(503, detail, {"Retry-After": "1"}) from exc
