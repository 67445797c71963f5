"""Operators switch a domain (or every domain) to "hold everything", and back.

A switch is a command on the decisions topic (header ``hitl.command: hold-all``), one per
decisions partition, applied by the partition's owner in its transaction like any decision.
It takes effect from the input offset that transaction commits up to (``Batch.switch_offset``):
the switch event is written in the same transaction to the partition's holds topic (keyed by
scope and effective offset, so compaction keeps every event) with an audit event, so it is
exactly once with the offsets, survives restarts and is restored with the hold index.
Routing then holds the domain's records from that offset on (stopswitch.py). Refused commands
(not an operator, domain not granted, unknown pool) are audited; results are kept per
(request, partition) and read by the API and the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hitl_gateway import headers
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import ResultKey
from hitl_gateway.outputs import audit_event
from hitl_gateway.policy.fields import Name
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.auth import ANY, Reviewer, ReviewerLookup
from hitl_gateway.review.batch import Batch
from hitl_gateway.review.reassign import RequestId
from hitl_gateway.review.state import first_error
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing
from hitl_gateway.stopswitch import ALL, SWITCH_HEADER, Scope, SwitchEvent, merged, state

COMMAND = b"hold-all"
COMMAND_HEADERS = [(headers.COMMAND, COMMAND)]


class SwitchRequest(BaseModel):
    """A switch as an operator asks for it: the API's body, the CLI's arguments and the
    command on the decisions topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId
    operator: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
    domain: Scope
    on: bool
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    pool: Name | None = None
    sla_s: Annotated[int, Field(gt=0, le=30 * 86_400)] | None = None

    @model_validator(mode="after")
    def _pool_when_on(self) -> SwitchRequest:
        if self.on and self.pool is None:
            raise ValueError("a switch turned on needs the pool its held items go to")
        return self


def is_command(record: Any) -> bool:
    return any(k == headers.COMMAND and v == COMMAND for k, v in record.headers or ())


def result_key(request_id: str, operator: str, partition: int) -> ResultKey:
    return (f"stop-switch:{request_id}", operator, str(partition))


def forbidden(request: SwitchRequest, who: Reviewer | None) -> str | None:
    """Why this operator may not give this command (None: they may)."""
    if who is None or not who.operator:
        return f"{request.operator} is not an operator (reviewers file: operator: true)"
    if request.domain == ALL and ANY not in who.domains:
        return f"{who.id} is not granted every domain ('*'), which switching all of them needs"
    if request.domain != ALL and ANY not in who.domains and request.domain not in who.domains:
        return f"{who.id} is not granted domain '{request.domain}'"
    return None


def invalid(request: SwitchRequest, policies: PolicySet) -> str | None:
    """Why this command cannot apply (None: it can). Switching on a domain no policy names
    is refused: a typo must not look like a stopped domain. Switching off never is."""
    if not request.on:
        return None
    if request.domain != ALL and request.domain not in policies.policies:
        return f"domain '{request.domain}' has no policy (use '*' for every domain)"
    if request.pool not in policies.pools:
        return f"pool '{request.pool}' is not defined in pools.yaml"
    return None


def refusal(request: SwitchRequest, who: Reviewer | None, policies: PolicySet) -> str | None:
    return forbidden(request, who) or invalid(request, policies)


class Switcher:
    def __init__(self, topics: TopicSettings, reviewers: ReviewerLookup, policies: PolicyStore):
        self._topics = topics
        self._reviewers = reviewers
        self._policies = policies

    async def apply(self, b: Batch) -> None:
        """One command record (``b.record``) of partition ``b.partition``."""
        try:
            request = SwitchRequest.model_validate_json(b.record.value)
        except ValidationError as exc:
            self._audit(b, {"type": "stop_switch_refused", "message": first_error(exc)})
            return
        key = result_key(request.request_id, request.operator, b.partition)
        known = [*b.switches, *b.out.switches]
        if key in b.out.results or any(e.request_id == request.request_id for e in known):
            return  # applied before (its event is kept in Kafka): a request id is applied once
        who = await self._reviewers.find(request.operator, b.record.timestamp)
        problem = refusal(request, who, self._policies.current)
        if problem is not None:
            event = {"type": "stop_switch_refused", **_named(request), "message": problem}
            self._audit(b, event)
            b.out.results[key] = self._result(request, b.partition, None, error=problem)
            return
        switch = SwitchEvent(
            domain=request.domain, on=request.on, effective_offset=b.switch_offset,
            request_id=request.request_id, operator=request.operator, reason=request.reason,
            pool=request.pool if request.on else None,
            sla_s=request.sla_s if request.on else None, at_ms=b.record.timestamp,
        )  # fmt: skip
        b.out.outgoing.append(
            Outgoing(self._topics.holds, switch.model_dump_json().encode(), switch.key(),
                     [(SWITCH_HEADER, b"1")], partition=b.partition)
        )  # fmt: skip
        kind = "stop_switch_on" if request.on else "stop_switch_off"
        self._audit(b, {"type": kind, **_named(request), "pool": switch.pool,
                        "sla_s": switch.sla_s, "effective_offset": switch.effective_offset,
                        "input_topic": self._topics.outputs})  # fmt: skip
        b.out.switches.append(switch)
        b.out.results[key] = self._result(request, b.partition, switch)

    def _audit(self, b: Batch, event: dict[str, Any]) -> None:
        sealed = {**event, "partition": b.partition, "at_ms": b.record.timestamp}
        key = str(event.get("domain", ""))
        b.out.outgoing.append(
            audit_event(self._topics.audit, b.chain, sealed, key, partition=b.partition)
        )

    @staticmethod
    def _result(
        request: SwitchRequest, partition: int, switch: SwitchEvent | None, error: str | None = None
    ) -> dict[str, Any]:
        return {
            **_named(request),
            "partition": partition,
            "effective_offset": switch.effective_offset if switch else None,
            "done": True,
            "error": error,
            "state": "stop-switch",
        }


def _named(request: SwitchRequest) -> dict[str, Any]:
    return {"request_id": request.request_id, "operator": request.operator,
            "domain": request.domain, "on": request.on, "reason": request.reason}  # fmt: skip


def commands(request: SwitchRequest, partitions: int) -> list[tuple[int, bytes]]:
    value = request.model_dump_json(exclude_none=True).encode()
    return [(p, value) for p in range(partitions)]


async def progress(
    index: HoldIndex, request_id: str, operator: str, partitions: int
) -> dict[str, Any]:
    """A switch command as far as it got: applied (or refused) on how many partitions, and the
    input offset it took effect from on each."""
    results = [await index.result(*result_key(request_id, operator, p)) for p in range(partitions)]
    found = [r for r in results if r is not None]
    return {
        "request_id": request_id,
        "operator": operator,
        "domain": found[0]["domain"] if found else None,
        "on": found[0]["on"] if found else None,
        "errors": sorted({r["error"] for r in found if r.get("error")}),
        "effective_offsets": {
            str(r["partition"]): r["effective_offset"] for r in found if not r.get("error")
        },
        "partitions": partitions,
        "partitions_done": len(found),
        "done": len(found) == partitions,
    }


async def submit(
    request: SwitchRequest, index: HoldIndex, publish: Any, *, topics: TopicSettings
) -> None:
    """Publish the command to every decisions partition (``publish(topic, value, key,
    partition, headers)``), unless the request id has results already (applied once)."""
    for p in range(topics.partitions):
        if await index.result(*result_key(request.request_id, request.operator, p)):
            return
    for p, value in commands(request, topics.partitions):
        await publish(topics.review_decisions, value, request.request_id.encode(), p,
                      COMMAND_HEADERS)  # fmt: skip


async def current(index: HoldIndex, partitions: int) -> dict[str, Any]:
    """Each scope's switch, per partition: on or off and since which input offset."""
    scopes: dict[str, dict[str, Any]] = {}
    for p in range(partitions):
        for scope, e in state(merged([], await index.switches(p))).items():
            entry = scopes.setdefault(scope, {"domain": scope, "partitions_on": 0,
                                              "partitions": {}})  # fmt: skip
            entry["partitions"][str(p)] = {
                "on": e.on, "effective_offset": e.effective_offset, "pool": e.pool,
                "request_id": e.request_id, "operator": e.operator, "reason": e.reason,
            }  # fmt: skip
            entry["partitions_on"] += int(e.on)
    for entry in scopes.values():
        entry["on"] = entry["partitions_on"] > 0
    listed = sorted(scopes.values(), key=lambda s: str(s["domain"]))
    return {"partitions": partitions, "switches": listed}
