"""The stop switch, pure: which switch event applies to a record, and how it changes the
record's decision.

A switch event is written by the owner of input partition p, in the transaction that commits
p's input offsets up to ``effective_offset``: records of p before it were routed without it,
every record at or after it with it. So whether a record is held is a function of (domain,
offset, the partition's switch events) alone, and a replay routes it the same way.
A domain's switch and the all-domains switch (``*``) are separate: a record is held while
either is on for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from hitl_gateway import headers
from hitl_gateway.models import Route
from hitl_gateway.policy.engine import Decision, Reason

ALL = "*"
RULE = "stop_switch"  # the held items' rule: no policy declares it (escalation: the default)
DEFAULT_SLA_S = 3_600
SWITCH_HEADER = headers.SWITCH  # marks a switch event on the holds topic (not a hold)

Scope = Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9_.-]{0,63})$")]


class SwitchEvent(BaseModel):
    """One switch, on or off, for one partition, as the holds topic and the index keep it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: Scope
    on: bool
    effective_offset: int = Field(ge=0)
    request_id: str
    operator: str
    reason: str
    pool: str | None = None
    sla_s: int | None = None
    at_ms: int = 0

    @property
    def field(self) -> str:
        """Its identity within the partition: one event per scope and effective offset."""
        return f"{self.domain}\0{self.effective_offset}"

    def key(self) -> bytes:
        """Its holds-topic key, distinct from every item id's and kept by compaction."""
        return f"\0switch\0{self.domain}\0{self.effective_offset}".encode()


def merged(events: Iterable[SwitchEvent], new: Iterable[SwitchEvent]) -> list[SwitchEvent]:
    """``events`` with ``new`` applied in order: a later event with the same scope and
    effective offset replaces the earlier one (as compaction and the index do)."""
    by_field = {e.field: e for e in events}
    for e in new:
        by_field[e.field] = e
    return sorted(by_field.values(), key=lambda e: (e.effective_offset, e.domain))


def latest(
    events: Iterable[SwitchEvent], scope: str, offset: int | None = None
) -> SwitchEvent | None:
    """The scope's last event at or before ``offset`` (None: of all)."""
    found: SwitchEvent | None = None
    for e in events:
        if e.domain != scope or (offset is not None and e.effective_offset > offset):
            continue
        if found is None or e.effective_offset >= found.effective_offset:
            found = e
    return found


def active(events: Iterable[SwitchEvent], domain: str, offset: int) -> SwitchEvent | None:
    """The switch that holds a record of ``domain`` at input ``offset``: the domain's own if
    on there, else the all-domains one if on there; None when neither is."""
    listed = list(events)
    for scope in (domain, ALL):
        found = latest(listed, scope, offset)
        if found is not None and found.on:
            return found
    return None


def state(events: Iterable[SwitchEvent]) -> dict[str, SwitchEvent]:
    """Each scope's latest event (what applies to the partition's next records)."""
    listed = list(events)
    out: dict[str, SwitchEvent] = {}
    for scope in {e.domain for e in listed}:
        found = latest(listed, scope)
        assert found is not None
        out[scope] = found
    return out


def override(decision: Decision, switch: SwitchEvent, timestamp_ms: int) -> Decision:
    """A decision under an active switch: a record that would pass, or be delivered and
    reviewed, is held in the switch's pool with its SLA, for one reviewer, claiming no budget,
    audited. Holds and dead letters are unchanged."""
    if decision.route not in (Route.PASS, Route.DELIVER_AND_REVIEW) or not switch.on:
        return decision
    detail = (
        f"stop switch '{switch.domain}' on by {switch.operator}"
        f" (request {switch.request_id}): {switch.reason}"
    )
    sla_s = switch.sla_s or DEFAULT_SLA_S
    return decision._replace(
        route=Route.HOLD,
        reasons=(Reason(RULE, detail),),
        pool=switch.pool,
        reviewers=1,
        adjudicator_pool=None,
        sla_deadline_ms=timestamp_ms + sla_s * 1000,
        blind=False,
        rubric=None,
        claims=(),
        stratum="",
        gold=None,
        fallback=False,
        audit=True,  # a held record is audited like every review the engine decides
    )
