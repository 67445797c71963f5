"""Budget state the engine reads: how much of a quota a window has used, and who holds a slot.

A slot is claimed by a record id, so a replayed record finds its own claim and routes as
before. ``MemoryLedger`` is the pure in-memory view (tests, ``policy simulate``, and the
per-batch overlay on top of Redis in ``budgets.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Claim:
    """One budget slot a decision takes: ``key`` names the quota and window."""

    key: str
    cap: int
    ttl_s: int | None  # None: never expires (a "first N records" sample)


class BudgetView(Protocol):
    def used(self, key: str) -> int: ...

    def claimed(self, key: str, item_id: str) -> bool: ...


class MemoryLedger:
    def __init__(self) -> None:
        self._members: dict[str, set[str]] = defaultdict(set)
        self._extra_used: dict[str, int] = defaultdict(int)

    def used(self, key: str) -> int:
        return len(self._members.get(key, ())) + self._extra_used.get(key, 0)

    def claimed(self, key: str, item_id: str) -> bool:
        return item_id in self._members.get(key, ())

    def apply(self, item_id: str, claims: Iterable[Claim]) -> None:
        for claim in claims:
            self._members[claim.key].add(item_id)

    def preload(self, key: str, used: int, members: Iterable[str]) -> None:
        """Seed from an external store: ``used`` slots taken, ``members`` known by id."""
        known = set(members)
        self._members[key] |= known
        self._extra_used[key] = max(0, used - len(self._members[key]))

    def deny(self, item_id: str, claims: Iterable[Claim]) -> None:
        """The store refused these claims (the cap was reached elsewhere): drop them, full."""
        for claim in claims:
            self._members[claim.key].discard(item_id)
            self._extra_used[claim.key] = max(
                self._extra_used[claim.key], claim.cap - len(self._members[claim.key])
            )
