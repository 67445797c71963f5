"""The reviewers file and the OIDC groups file, reloaded when they change: a revoked token
or group stops working within one check interval, without a restart.

Polled like the policy files; the files are small, so their content's digest is the
fingerprint (an edit within the clock's resolution that keeps the size is a change too). A
valid new file replaces the one in force in one assignment; an invalid or missing one is
refused, and the one in force stays (to revoke everyone, write a file that grants nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

import structlog
from prometheus_client import Counter

from hitl_gateway.errors import ConfigError
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.review.groups import GroupMap

log = structlog.get_logger(__name__)


class Reloadable(Protocol):
    def names(self) -> set[str]: ...

    def replace_with(self, other: Self) -> None: ...


T = TypeVar("T", bound=Reloadable)


def fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class FileWatcher(Generic[T]):
    """Keeps ``target`` in step with the file at ``path`` (``what`` names it in logs:
    ``{what}_reloaded``, ``{what}_reload_refused``)."""

    def __init__(
        self,
        path: Path,
        target: T,
        load: Callable[[Path], T],
        reloads: Counter,
        *,
        interval_s: float,
        what: str,
    ) -> None:
        self.path = path
        self.target = target
        self._load = load
        self._reloads = reloads
        self._interval_s = interval_s
        self._what = what
        self._seen = fingerprint(path)

    def check(self) -> bool | None:
        """Reload if the file changed: True when replaced, False when refused, None when
        unchanged."""
        now = fingerprint(self.path)
        if now == self._seen:
            return None
        self._seen = now
        if now is None:
            return self._refuse("the file is missing")
        try:
            new = self._load(self.path)
        except ConfigError as exc:
            return self._refuse(str(exc))
        before = self.target.names()
        self.target.replace_with(new)
        after = new.names()
        self._reloads.labels(outcome="success").inc()
        log.info(
            f"{self._what}_reloaded",
            count=len(after),
            added=sorted(after - before)[:20],
            removed=sorted(before - after)[:20],
        )
        return True

    def _refuse(self, problem: str) -> bool:
        self._reloads.labels(outcome="failure").inc()
        log.error(f"{self._what}_reload_refused", path=str(self.path), problem=problem[:2000],
                  kept=len(self.target.names()))  # fmt: skip
        return False

    async def watch(self, stop: asyncio.Event) -> None:
        if self._interval_s <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
            if not stop.is_set():
                self.check()


def reviewers_watcher(
    path: Path, reviewers: Reviewers, metrics: GatewayMetrics, interval_s: float
) -> FileWatcher[Reviewers]:
    return FileWatcher(path, reviewers, Reviewers.load, metrics.reviewer_reloads,
                       interval_s=interval_s, what="reviewers")  # fmt: skip


def groups_watcher(
    path: Path, groups: GroupMap, metrics: GatewayMetrics, interval_s: float
) -> FileWatcher[GroupMap]:
    return FileWatcher(path, groups, GroupMap.load, metrics.oidc_groups_reloads,
                       interval_s=interval_s, what="oidc_groups")  # fmt: skip
