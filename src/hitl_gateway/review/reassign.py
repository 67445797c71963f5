"""Operators move work: one held item, or every held item of a pool or a language, to
another pool.

A reassignment is a command on the decisions topic (header ``hitl.command: reassign``), one
per holds partition (or one, on the item's partition), applied by the partition's owner in
its transaction like any decision: hold updates, review tasks for the new pool, one
``reassigned`` audit event per item. A bulk command moves at most
``HITL_REVIEW__REASSIGN_CHUNK`` holds per transaction and, in the same transaction, writes
its own continuation (the last item id it reached, the counts so far) back to the partition.
So a kill at any point resumes where the last commit left off, and every item is moved once.
Items the target pool cannot serve (language, domain) are refused and listed in the result,
which is kept per (request, partition) and read by the API and the CLI.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hitl_gateway import headers
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold, ResultKey
from hitl_gateway.models import HoldMeta, LanguageTag
from hitl_gateway.outputs import audit_event
from hitl_gateway.policy.fields import Name
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.pools import refusal, speaks
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.auth import ANY, Reviewer, ReviewerLookup
from hitl_gateway.review.batch import Batch
from hitl_gateway.review.moves import move
from hitl_gateway.review.reroute import language_of
from hitl_gateway.review.state import ClosedBy, first_error
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing

COMMAND = b"reassign"
COMMAND_HEADERS = [(headers.COMMAND, COMMAND)]
MAX_LISTED = 20  # refused items listed in a result (all are counted)

RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class ReassignRequest(BaseModel):
    """A reassignment as an operator asks for it (exactly one of item_id, pool, language):
    the API's body and the CLI's arguments, nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId
    operator: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
    to_pool: Name
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    item_id: Annotated[str, Field(min_length=1, max_length=4_096)] | None = None
    pool: Name | None = None
    language: LanguageTag | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> ReassignRequest:
        chosen = [n for n in ("item_id", "pool", "language") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"name exactly one of item_id, pool, language (got {chosen or 'none'})"
            )
        if self.pool is not None and self.pool == self.to_pool:
            raise ValueError(f"pool and to_pool are both '{self.pool}'")
        return self

    def what(self) -> str:
        if self.item_id is not None:
            return f"item {self.item_id}"
        return f"pool {self.pool}" if self.pool is not None else f"language {self.language}"


class Reassign(ReassignRequest):
    """The command on the decisions topic: the request, and a continuation's progress (the
    last item id reached and the counts so far)."""

    after: str | None = None
    moved: int = Field(default=0, ge=0)
    refused: int = Field(default=0, ge=0)
    refusals: list[dict[str, str]] = Field(default_factory=list, max_length=MAX_LISTED)


def is_command(record: Any) -> bool:
    return any(k == headers.COMMAND and v == COMMAND for k, v in record.headers or ())


def result_key(request_id: str, operator: str, partition: int) -> ResultKey:
    return (f"reassign:{request_id}", operator, str(partition))


def commands(request: ReassignRequest, partitions: list[int]) -> list[tuple[int, bytes]]:
    """The command records to publish: (partition, value) per partition to cover."""
    value = (
        Reassign.model_validate(request.model_dump())
        .model_dump_json(exclude_defaults=True)
        .encode()
    )
    return [(p, value) for p in partitions]


def speaks_tag(language: str | None, wanted: str) -> bool:
    """``pt`` selects ``pt-BR`` and ``pt``; ``pt-BR`` selects ``pt-BR`` only."""
    if language is None:
        return False
    lang, want = language.lower(), wanted.lower()
    return lang == want or ("-" not in want and lang.split("-", maxsplit=1)[0] == want)


class Reassigner:
    def __init__(
        self,
        topics: TopicSettings,
        index: HoldIndex,
        reviewers: ReviewerLookup,
        policies: PolicyStore,
        chunk: int,
    ) -> None:
        self._topics = topics
        self._index = index
        self._reviewers = reviewers
        self._policies = policies
        self._chunk = chunk

    async def apply(self, b: Batch, overlay: dict[str, IndexedHold | ClosedBy]) -> None:
        """One command record (``b.record``) of partition ``b.partition``."""
        record = b.record
        try:
            request = Reassign.model_validate_json(record.value)
        except ValidationError as exc:
            self._audit(b, {"type": "reassign_refused", "message": first_error(exc)}, "")
            return
        key = result_key(request.request_id, request.operator, b.partition)
        if request.after is None and (key in b.out.results or await self._index.result(*key)):
            return  # this request id was applied before: a request id is applied once
        who = await self._reviewers.find(request.operator, record.timestamp)
        policies = self._policies.current
        problem = None
        if who is None or not who.operator:
            problem = (f"{request.operator} is not an operator (operator: true in the"
                       " reviewers file or an OIDC group)")  # fmt: skip
        elif request.to_pool not in policies.pools:
            problem = f"pool '{request.to_pool}' is not defined in pools.yaml"
        if problem is not None or who is None:
            problem = problem or "no operator"
            event = {"type": "reassign_refused", "request_id": request.request_id,
                     "operator": request.operator, "message": problem}  # fmt: skip
            self._audit(b, event, request.item_id or "")
            b.out.results[key] = self._result(request, b.partition, done=True, error=problem)
            return
        progress = await self._chunk_of(b, request, who, overlay, policies)
        b.out.results[key] = self._result(progress, b.partition, done=progress.after is None)
        if progress.after is not None:  # more to do: the continuation commits with this chunk
            value = progress.model_dump_json(exclude_defaults=True).encode()
            b.out.outgoing.append(
                Outgoing(self._topics.review_decisions, value, record.key, COMMAND_HEADERS,
                         partition=b.partition)
            )  # fmt: skip

    async def _candidates(self, request: Reassign, partition: int) -> list[str]:
        if request.item_id is not None:
            ids = [request.item_id]
        elif request.pool is not None:
            ids = await self._index.members(request.pool)
        else:
            ids = await self._index.open_ids(partition)
        return sorted(i for i in ids if request.after is None or i > request.after)

    async def _chunk_of(
        self,
        b: Batch,
        request: Reassign,
        who: Reviewer,
        overlay: dict[str, IndexedHold | ClosedBy],
        policies: PolicySet,
    ) -> Reassign:
        """Move up to a chunk of the matching holds; the request's progress afterwards
        (``after`` None: done)."""
        moved, refused, refusals = request.moved, request.refused, list(request.refusals)
        taken, last = 0, request.after or ""
        for item_id in await self._candidates(request, b.partition):
            held = overlay[item_id] if item_id in overlay else await self._index.get(item_id)
            if not isinstance(held, IndexedHold) or held.partition != b.partition:
                continue
            meta, language = held.meta, language_of(held)
            if request.pool is not None and meta.pool != request.pool:
                continue
            if request.language is not None and not speaks_tag(language, request.language):
                continue
            if meta.pool == request.to_pool:
                continue
            if taken == self._chunk:  # one more matches: it starts the next chunk
                return request.model_copy(update={
                    "after": last, "moved": moved, "refused": refused, "refusals": refusals,
                })  # fmt: skip
            taken += 1
            last = item_id
            why = self._refusal(meta, language, request.to_pool, policies, who)
            if why is not None:
                refused += 1
                if len(refusals) < MAX_LISTED:
                    refusals.append({"item_id": item_id, "message": why})
                continue
            updated = dataclasses.replace(meta, fallback=False)
            detail = f"reassigned by {request.operator}: {request.reason}"
            event = {"operator": request.operator, "request_id": request.request_id,
                     "reason": request.reason}  # fmt: skip
            b.out.outgoing += move(
                self._topics, held, updated, to_pool=request.to_pool, kind="reassigned",
                detail=detail, event=event, now_ms=b.record.timestamp, chain=b.chain,
            )  # fmt: skip
            overlay[item_id] = IndexedHold(updated, held.value, held.key, held.headers,
                                           held.partition)  # fmt: skip
            b.out.moves.append(("reassign", request.to_pool))
            moved += 1
        return request.model_copy(update={
            "after": None, "moved": moved, "refused": refused, "refusals": refusals,
        })  # fmt: skip

    @staticmethod
    def _refusal(
        meta: HoldMeta, language: str | None, to_pool: str, policies: PolicySet, who: Reviewer
    ) -> str | None:
        """Why this hold cannot move to ``to_pool`` (None: it can)."""
        if ANY not in who.domains and meta.domain not in who.domains:
            return f"{who.id} is not granted domain '{meta.domain}'"
        if meta.stage != "review":
            return "in adjudication: its adjudicator pool decides it"
        loaded = policies.policies.get(meta.domain)
        if loaded is None:  # its policy is gone: any pool that serves the language may take it
            pool = policies.pools[to_pool]
            if language is not None and pool.languages and not speaks(pool, language):
                return f"pool '{to_pool}' does not serve language '{language}'"
            return None
        spec = loaded.policy.rule(meta.rule)
        return refusal(
            to_pool,
            language=language,
            rule_pool=spec.pool if spec is not None else None,
            policy=loaded.policy,
            pools=policies.pools,
        )

    def _audit(self, b: Batch, event: dict[str, Any], key: str) -> None:
        sealed = {**event, "at_ms": b.record.timestamp}
        b.out.outgoing.append(
            audit_event(self._topics.audit, b.chain, sealed, key, partition=b.partition)
        )

    @staticmethod
    def _result(
        request: Reassign, partition: int, *, done: bool, error: str | None = None
    ) -> dict[str, Any]:
        return {
            "request_id": request.request_id,
            "operator": request.operator,
            "partition": partition,
            "what": request.what(),
            "to_pool": request.to_pool,
            "moved": request.moved,
            "refused": request.refused,
            "refusals": request.refusals,
            "done": done,
            "error": error,
            "state": "reassign",
        }


async def progress(
    index: HoldIndex, request_id: str, operator: str, partitions: list[int]
) -> dict[str, Any]:
    """A reassignment as far as it has got: the partitions' results summed (``done`` once
    every partition has finished)."""
    results = [await index.result(*result_key(request_id, operator, p)) for p in partitions]
    found = [r for r in results if r is not None]
    refusals = [x for r in found for x in r.get("refusals", [])][:MAX_LISTED]
    errors = sorted({r["error"] for r in found if r.get("error")})
    return {
        "request_id": request_id,
        "operator": operator,
        "what": found[0]["what"] if found else None,
        "to_pool": found[0]["to_pool"] if found else None,
        "moved": sum(r.get("moved", 0) for r in found),
        "refused": sum(r.get("refused", 0) for r in found),
        "refusals": refusals,
        "errors": errors,
        "partitions": len(partitions),
        "partitions_done": sum(1 for r in found if r.get("done")),
        # An item's request covers its hold's partition only; a bulk one every partition.
        "done": bool(found)
        and (len(found) == len(partitions) or str(found[0].get("what", "")).startswith("item "))
        and all(r.get("done") for r in found),
    }


async def submit(
    request: ReassignRequest,
    index: HoldIndex,
    publish: Any,
    *,
    topics: TopicSettings,
    partitions: int,
) -> list[int]:
    """Publish a reassignment's commands (``publish(topic, value, key, partition,
    headers)``); returns the partitions it covers. An item's command goes to its hold's
    partition; a bulk one to every holds partition. A request id that has results already
    is not published again (it is applied once): its partitions are returned."""
    every = list(range(partitions))
    keys = [result_key(request.request_id, request.operator, p) for p in every]
    earlier = [p for p, key in zip(every, keys, strict=True) if await index.result(*key)]
    if earlier:
        return every if len(earlier) > 1 or not request.item_id else earlier
    if request.item_id is not None:
        held = await index.get(request.item_id)
        covered = [held.partition] if held is not None else []
    else:
        covered = list(range(partitions))
    key = request.request_id.encode()
    for p, value in commands(request, covered):
        await publish(topics.review_decisions, value, key, p, COMMAND_HEADERS)
    return covered
