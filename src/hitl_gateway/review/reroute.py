"""The re-router: holds waiting for a pool that can serve them better move there as soon as
one exists.

A hold is eligible while it waits in a fallback pool because no pool spoke its language
(``HoldMeta.fallback``), in the ``unassigned`` pool of earlier versions, or in a pool the
pools file no longer defines. After every policy reload (and whenever this instance takes a
partition), the owner of each holds partition asks the current policy where each eligible
hold of its partition would go (``policy.pools.choose``) and moves the ones whose answer
changed: hold update, review task, ``rerouted`` audit event, in the partition's transaction,
at most ``CHUNK`` per transaction. It is driven by the index's state, not by an event, so
it is idempotent and a restart half-way simply finds the rest still eligible.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

import structlog

from hitl_gateway.audit import AuditChain
from hitl_gateway.codec import read_json
from hitl_gateway.holds import HoldIndex
from hitl_gateway.index_entries import IndexedHold
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.policy.engine import UNASSIGNED
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.policy.pools import Choice, choose
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.review.moves import move
from hitl_gateway.settings import TopicSettings
from hitl_gateway.sink import Outgoing

log = structlog.get_logger(__name__)

CHUNK = 500  # holds moved per transaction


class PartitionWriter(Protocol):
    """What the sweepers need from the pipeline: owned partitions and their transactions."""

    @property
    def owned_partitions(self) -> set[int]: ...

    def partition_lock(self, partition: int) -> asyncio.Lock | None: ...

    def chain(self, partition: int) -> AuditChain: ...

    async def publish(self, partition: int, outgoing: list[Outgoing]) -> None: ...


def language_of(held: IndexedHold) -> str | None:
    """The held record's language (holds of earlier versions do not carry it in their meta)."""
    if held.meta.language is not None:
        return held.meta.language
    body = read_json(held.value)
    language = body.get("language") if isinstance(body, dict) else None
    return language if isinstance(language, str) else None


def destination(held: IndexedHold, policies: PolicySet) -> Choice | None:
    """Where an eligible hold would go now, if that is somewhere else (pure)."""
    meta = held.meta
    eligible = meta.fallback or meta.pool == UNASSIGNED or meta.pool not in policies.pools
    if not eligible or meta.stage != "review":
        return None
    loaded = policies.policies.get(meta.domain)
    rule = loaded.policy.rule(meta.rule) if loaded is not None else None
    if loaded is None or rule is None:
        return None  # its policy or rule is gone: an operator reassigns it
    choice = choose(
        language_of(held),
        meta.rule or "",
        rule_pool=rule.pool,
        policy=loaded.policy,
        pools=policies.pools,
        default_fallback=policies.routing.review_defaults.fallback_pool,
    )
    return choice if choice.pool != meta.pool else None


class Rerouter:
    def __init__(
        self,
        topics: TopicSettings,
        index: HoldIndex,
        policies: PolicyStore,
        metrics: GatewayMetrics,
    ) -> None:
        self._topics = topics
        self._index = index
        self._policies = policies
        self._metrics = metrics
        # Partition -> (the policy set version it is done for, the lock of that ownership):
        # a partition given up and taken back has a new lock, and is checked again.
        self._done: dict[int, tuple[str, asyncio.Lock]] = {}

    async def run(self, writer: PartitionWriter, now_ms: int) -> int:
        """Re-route the eligible holds of owned partitions not yet done for the current
        policy set; returns the holds moved."""
        current = self._policies.current
        todo: set[int] = set()
        for p in writer.owned_partitions:
            lock = writer.partition_lock(p)
            if lock is not None and self._done.get(p) != (current.version, lock):
                todo.add(p)
        if not todo:
            return 0
        by_partition: dict[int, list[str]] = {p: [] for p in todo}
        for item_id in await self._candidates(current):
            held = await self._index.get(item_id)
            if held is not None and held.partition in todo and destination(held, current):
                by_partition[held.partition].append(item_id)
        moved = 0
        for p, ids in sorted(by_partition.items()):
            done, complete = await self._partition(writer, p, ids, current, now_ms)
            moved += done
            if complete:
                self._done[p] = complete
        if moved:
            log.info("holds_rerouted", holds=moved, policy_set_version=current.version)
        return moved

    async def _candidates(self, policies: PolicySet) -> list[str]:
        pools = {UNASSIGNED} | (await self._index.pools() - set(policies.pools))
        fallbacks = [policies.fallback_pool(d) for d in policies.policies]
        pools |= {p for p in fallbacks if p is not None}
        ids: set[str] = set()
        for pool in sorted(pools):
            ids.update(await self._index.members(pool))
        return sorted(ids)

    async def _partition(
        self,
        writer: PartitionWriter,
        p: int,
        ids: list[str],
        policies: PolicySet,
        now_ms: int,
    ) -> tuple[int, tuple[str, asyncio.Lock] | None]:
        """Move up to ``CHUNK`` of ``ids`` under p's lock, each read again there (a decision
        or a move may have committed since the scan). Returns the holds moved and, when
        nothing is left to move, what marks p done. Taking the lock even with nothing to
        move lets a batch routed under the previous policy set finish first."""
        lock = writer.partition_lock(p)
        if lock is None:
            return 0, None
        async with lock:
            if writer.partition_lock(p) is not lock:
                return 0, None
            chain = writer.chain(p)
            outgoing: list[Outgoing] = []
            moved: list[str] = []
            for item_id in ids[:CHUNK]:
                held = await self._index.get(item_id)
                choice = destination(held, policies) if held is not None else None
                if held is None or choice is None or held.partition != p:
                    continue  # closed, moved or decided meanwhile
                meta = dataclasses.replace(held.meta, fallback=choice.fallback)
                detail = choice.detail or f"now reviewed by {choice.pool}"
                event = {"policy_set_version": policies.version}
                outgoing += move(
                    self._topics, held, meta, to_pool=choice.pool, kind="rerouted",
                    detail=detail, event=event, now_ms=now_ms, chain=chain,
                )  # fmt: skip
                moved.append(choice.pool)
            if outgoing:
                await writer.publish(p, outgoing)
        for pool in moved:
            self._metrics.holds_moved.labels(kind="reroute", pool=pool).inc()
        return len(moved), ((policies.version, lock) if len(ids) <= CHUNK else None)
