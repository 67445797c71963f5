"""The review API's leases and rubrics: what a reviewer's tool (the workspace, or another)
needs to take an item, keep it while working and put it back, and to show the rubric.

``POST /v1/items/{id}/lease`` takes or renews the caller's lease (409 naming who holds every
seat); ``DELETE`` puts the item back; ``GET /v1/rubrics/{name}`` is the rubric as the policy
files declare it (criteria, dimensions, grade definitions, reject reasons).
"""

# FastAPI resolves the dependency annotations below at import: no postponed annotations here.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.api import ItemId, authenticator, guard
from hitl_gateway.review.auth import Reviewer
from hitl_gateway.review.identities import Identities
from hitl_gateway.review.leases import Taken
from hitl_gateway.review.submit import Reviewing, seats


class Holder(BaseModel):
    reviewer: str
    expires_at_ms: int
    taken_at_ms: int


class LeaseView(BaseModel):
    item_id: str
    reviewer: str
    expires_at_ms: int
    taken_at_ms: int
    seats: int
    holders: list[Holder]


async def take_item(r: Reviewing, who: Reviewer, item_id: str) -> tuple[Taken, int]:
    """Take or renew ``who``'s lease on a held item: (the lease state, the item's seats).
    404 not held, 403 not granted, 409 already voted or every seat held by others."""
    held = await r.index.get(item_id)
    if held is None:
        raise HTTPException(404, f"no held item {item_id}")
    meta = held.meta
    allowed = meta.adjudicator_pool if meta.stage == "adjudication" else meta.pool
    if not who.may_review(allowed or meta.pool, meta.domain):
        raise HTTPException(403, f"{who.id} may not review pool {meta.pool}")
    if any(vote.get("reviewer") == who.id for vote in meta.votes):
        raise HTTPException(409, f"{who.id} has already voted on {item_id}")
    n = seats(meta)
    taken = await r.leases.take(item_id, who.id, n)
    if not taken.granted:
        names = ", ".join(h.reviewer for h in taken.holders)
        raise HTTPException(409, f"{item_id} is being reviewed by {names}")
    return taken, n


def lease_router(r: Reviewing, identities: Identities, policies: PolicyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["review"])
    Who = Annotated[Reviewer, Depends(authenticator(identities, r.limiter))]

    @router.post(
        "/items/{item_id}/lease", response_model=LeaseView, responses={403: {}, 404: {}, 409: {}}
    )
    async def take(item_id: ItemId, who: Who) -> LeaseView:
        """Take the item for ``HITL_REVIEW__LEASE_S`` (or renew the caller's lease): nobody
        else takes a seat the caller holds."""
        taken, n = await guard(take_item(r, who, item_id))
        mine = taken.of(who.id)
        assert mine is not None
        holders = [Holder(reviewer=h.reviewer, expires_at_ms=h.expires_ms,
                          taken_at_ms=h.taken_ms) for h in taken.holders]  # fmt: skip
        return LeaseView(item_id=item_id, reviewer=who.id, expires_at_ms=mine.expires_ms,
                         taken_at_ms=mine.taken_ms, seats=n, holders=holders)  # fmt: skip

    @router.delete("/items/{item_id}/lease", status_code=204)
    async def put_back(item_id: ItemId, who: Who) -> Response:
        """Put the item back: the caller's lease ends (nothing else changes)."""
        await guard(r.leases.release(item_id, who.id))
        return Response(status_code=204)

    @router.get("/rubrics/{name}")
    async def rubric(
        name: Annotated[str, Path(min_length=1, max_length=64)], who: Who
    ) -> dict[str, Any]:
        """A rubric as declared in routing.yaml: criteria, dimensions, grades, definitions."""
        found = policies.current.routing.rubrics.get(name)
        if found is None:
            raise HTTPException(404, f"no rubric {name}")
        return found.model_dump(mode="json")

    return router
