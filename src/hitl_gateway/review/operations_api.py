"""Operators' part of the review API: moving held work between pools (reassign.py) and the
stop switch (stop_switch.py).

``POST /v1/reassignments`` takes one held item, or every held item of a pool or a language,
to another pool; ``GET /v1/reassignments/{request_id}`` reports how far it got.
``POST /v1/stop-switch`` switches a domain (or all) to holding every record, or back;
``GET /v1/stop-switch`` reports each switch. Operators only (``operator: true`` in the
reviewers file, or an OIDC group granting it); every command is audited with their id.
"""

# FastAPI resolves the dependency annotations below at import: no postponed annotations here.

import asyncio
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from hitl_gateway.holds import HoldIndex
from hitl_gateway.policy.pools import refusal
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.api import authenticator, guard
from hitl_gateway.review.auth import Reviewer
from hitl_gateway.review.identities import Identities
from hitl_gateway.review.limits import RequestLimiter
from hitl_gateway.review.reassign import ReassignRequest, progress, submit
from hitl_gateway.review.reroute import language_of
from hitl_gateway.review.state import first_error
from hitl_gateway.review.stop_switch import SwitchRequest
from hitl_gateway.review.stop_switch import current as switch_state
from hitl_gateway.review.stop_switch import forbidden as switch_forbidden
from hitl_gateway.review.stop_switch import invalid as switch_invalid
from hitl_gateway.review.stop_switch import progress as switch_progress_of
from hitl_gateway.review.stop_switch import submit as switch_submit
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Publisher


def operations_router(
    settings: Settings,
    index: HoldIndex,
    policies: PolicyStore,
    publisher: Publisher,
    *,
    identities: Identities,
    limiter: RequestLimiter | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["operations"])
    Who = Annotated[Reviewer, Depends(authenticator(identities, limiter))]
    partitions = settings.topics.partitions

    def operator(found: Reviewer) -> Reviewer:
        if not found.operator:
            raise HTTPException(403, f"{found.id} is not an operator")
        return found

    @router.post("/reassignments", status_code=202)
    async def reassign(caller: Who, request: Request) -> JSONResponse:
        """Move one held item (``item_id``), or every held item of a ``pool`` or a
        ``language``, to ``to_pool``, with a ``reason``. 200 when done within the wait, 202
        with the request id to poll otherwise; 409 when the one item cannot go there."""
        operator(caller)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"the body is not strict JSON: {exc}") from exc
        if not isinstance(body, dict) or len(body) > 8:
            raise HTTPException(422, "the body must be a JSON object of at most 8 fields")
        body.setdefault("request_id", uuid.uuid4().hex)
        try:
            wanted = ReassignRequest.model_validate({**body, "operator": caller.id})
        except ValidationError as exc:
            raise HTTPException(422, first_error(exc)) from exc
        current = policies.current
        if wanted.to_pool not in current.pools:
            raise HTTPException(422, f"pool '{wanted.to_pool}' is not defined in pools.yaml")
        if wanted.item_id is not None:
            held = await guard(index.get(wanted.item_id))
            if held is None:
                raise HTTPException(404, f"no held item {wanted.item_id}")
            loaded = current.policies.get(held.meta.domain)
            spec = loaded.policy.rule(held.meta.rule) if loaded else None
            why = (
                refusal(wanted.to_pool, language=language_of(held),
                        rule_pool=spec.pool if spec else None, policy=loaded.policy,
                        pools=current.pools)
                if loaded else f"domain '{held.meta.domain}' has no policy"
            )  # fmt: skip
            if why is not None:
                raise HTTPException(409, why)
        await guard(identities.remember(caller))  # an OIDC operator: for the applier
        covered = await guard(
            submit(wanted, index, publisher.publish, topics=settings.topics,
                   partitions=partitions)
        )  # fmt: skip
        found = await _wait_done(index, wanted, covered, settings.review.decision_wait_s)
        return JSONResponse(found, status_code=200 if found["done"] else 202)

    @router.get("/reassignments/{request_id}")
    async def reassignment(
        request_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")], caller: Who
    ) -> dict[str, Any]:
        """How far a reassignment got (the caller's own request id)."""
        operator(caller)
        found: dict[str, Any] = await guard(
            progress(index, request_id, caller.id, list(range(partitions)))
        )
        return found

    _switch_routes(
        router, settings, index, policies=policies, publisher=publisher, Who=Who,
        operator=operator,
    )  # fmt: skip
    return router


def _switch_routes(
    router: APIRouter,
    settings: Settings,
    index: HoldIndex,
    *,
    policies: PolicyStore,
    publisher: Publisher,
    Who: Any,
    operator: Any,
) -> None:
    """The stop switch's routes (stop_switch.py)."""
    partitions = settings.topics.partitions

    @router.post("/stop-switch", status_code=202)
    async def switch(caller: Who, request: Request) -> JSONResponse:
        """Switch a ``domain`` (``*``: all) to holding every record (``on: true``, with the
        ``pool`` held items go to, an optional ``sla_s`` and a ``reason``), or back. 200 once
        every partition applied it, 202 with the request id otherwise; 403 when the caller
        may not switch that domain."""
        operator(caller)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"the body is not strict JSON: {exc}") from exc
        if not isinstance(body, dict) or len(body) > 8:
            raise HTTPException(422, "the body must be a JSON object of at most 8 fields")
        body.setdefault("request_id", uuid.uuid4().hex)
        try:
            wanted = SwitchRequest.model_validate({**body, "operator": caller.id})
        except ValidationError as exc:
            raise HTTPException(422, first_error(exc)) from exc
        why = switch_forbidden(wanted, caller)
        if why is not None:
            raise HTTPException(403, why)
        why = switch_invalid(wanted, policies.current)
        if why is not None:
            raise HTTPException(422, why)
        await guard(switch_submit(wanted, index, publisher.publish, topics=settings.topics))
        found = await _wait_switched(index, wanted, partitions, settings.review.decision_wait_s)
        return JSONResponse(found, status_code=200 if found["done"] else 202)

    @router.get("/stop-switch")
    async def switches(caller: Who) -> dict[str, Any]:
        """Each domain's stop switch per partition: on or off, since which input offset."""
        operator(caller)
        found: dict[str, Any] = await guard(switch_state(index, partitions))
        return found

    @router.get("/stop-switch/{request_id}")
    async def switch_progress(
        request_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")], caller: Who
    ) -> dict[str, Any]:
        """How far a switch command got (the caller's own request id)."""
        operator(caller)
        found: dict[str, Any] = await guard(
            switch_progress_of(index, request_id, caller.id, partitions)
        )
        return found


async def _wait_switched(
    index: HoldIndex, wanted: SwitchRequest, partitions: int, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, Any] = await guard(
            switch_progress_of(index, wanted.request_id, wanted.operator, partitions)
        )
        if found["done"] or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.05)


async def _wait_done(
    index: HoldIndex, wanted: ReassignRequest, covered: list[int], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        found: dict[str, Any] = await guard(
            progress(index, wanted.request_id, wanted.operator, covered)
        )
        if found["done"] or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
