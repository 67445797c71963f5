"""The reviewers file, reloaded when it changes: a revoked token stops working within one
check interval, without a restart.

Polled like the policy files; the file is small, so its content's digest is the fingerprint
(an edit within the clock's resolution that keeps the size is a change too). A valid new
file replaces the reviewers in one assignment; an invalid or missing one is refused, and the
reviewers in force stay (to revoke everyone, write a file with no reviewers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import structlog

from hitl_gateway.errors import ConfigError
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.auth import Reviewers

log = structlog.get_logger(__name__)


def fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ReviewerFileWatcher:
    def __init__(
        self, path: Path, reviewers: Reviewers, metrics: GatewayMetrics, interval_s: float
    ) -> None:
        self.path = path
        self.reviewers = reviewers
        self._metrics = metrics
        self._interval_s = interval_s
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
            new = Reviewers.load(self.path)
        except ConfigError as exc:
            return self._refuse(str(exc))
        before = {r.id for r in self.reviewers}
        self.reviewers.replace_with(new)
        after = {r.id for r in new}
        self._metrics.reviewer_reloads.labels(outcome="success").inc()
        log.info(
            "reviewers_reloaded",
            reviewers=len(after),
            added=sorted(after - before)[:20],
            removed=sorted(before - after)[:20],
        )
        return True

    def _refuse(self, problem: str) -> bool:
        self._metrics.reviewer_reloads.labels(outcome="failure").inc()
        log.error("reviewers_reload_refused", path=str(self.path), problem=problem[:2000],
                  kept=len(list(self.reviewers)))  # fmt: skip
        return False

    async def watch(self, stop: asyncio.Event) -> None:
        if self._interval_s <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
            if not stop.is_set():
                self.check()
