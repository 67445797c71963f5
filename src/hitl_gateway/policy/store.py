"""The policy set in force, and its hot reload.

Loaded once at start (an invalid set stops the process). A reload, on SIGHUP or when a file
changes, builds a whole new set and swaps it in one assignment; an invalid one is refused,
counted and logged, and the old set keeps serving. Each batch reads ``current`` once, so a
batch never mixes two sets.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.policy.problems import PolicyError
from hitl_gateway.settings import PolicySettings

log = structlog.get_logger(__name__)


class PolicyStore:
    def __init__(self, settings: PolicySettings, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._fingerprint = self._files_fingerprint()
        self.current: PolicySet = self._load()
        metrics.set_policy_version(self.current.version)
        log.info(
            "policies_loaded", version=self.current.version, domains=len(self.current.policies)
        )

    def _load(self) -> PolicySet:
        s = self._settings
        return load_policy_set(s.dir, s.pools_file, s.routing_file)

    def _files(self) -> list[Path]:
        s = self._settings
        files = [*sorted(Path(s.dir).glob("*.y*ml"))]
        current: PolicySet | None = getattr(self, "current", None)  # None while constructing
        for loaded in current.policies.values() if current else ():
            gold = loaded.policy.calibration.gold  # gold files are watched too
            if gold is not None:
                files.append(Path(s.dir) / gold.file)
        files.append(s.pools_file or Path(s.dir).parent / "pools.yaml")
        files.append(s.routing_file or Path(s.dir).parent / "routing.yaml")
        return files

    def _files_fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        stamp = []
        for path in self._files():
            with contextlib.suppress(OSError):
                st = path.stat()
                stamp.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def reload(self) -> bool:
        """Swap in a new valid set; keep the old one if the files are invalid."""
        self._fingerprint = self._files_fingerprint()
        try:
            new = self._load()
        except PolicyError as exc:
            self._metrics.policy_reloads.labels(outcome="failure").inc()
            log.error(
                "policy_reload_refused",
                kept_version=self.current.version,
                problems=[str(p) for p in exc.problems][:20],
            )
            return False
        self._metrics.policy_reloads.labels(outcome="success").inc()
        if new.version != self.current.version:
            old, self.current = self.current.version, new
            self._metrics.set_policy_version(new.version)
            log.info("policies_reloaded", version=new.version, previous=old)
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload when a policy file changes (polled; no platform file-event dependency)."""
        interval = self._settings.reload_interval_s
        if interval <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set() and self._files_fingerprint() != self._fingerprint:
                self.reload()
