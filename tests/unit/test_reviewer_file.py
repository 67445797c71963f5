"""The reviewers file reloads on change: a valid file replaces the reviewers every holder
sees, an invalid or missing one is refused and the reviewers in force stay."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.auth import Reviewers, new_token
from hitl_gateway.review.reviewer_file import reviewers_watcher


def _write(path: Path, who: str, digest: str) -> None:
    path.write_text(f"reviewers:\n  - {{id: {who}, token_sha256: {digest}, pools: [p]}}\n")


def test_reload_replaces_refuses_and_keeps(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.yaml"
    old_token, old_digest = new_token()
    _write(path, "ana", old_digest)
    reviewers = Reviewers.load(path)
    metrics = GatewayMetrics(CollectorRegistry())
    watcher = reviewers_watcher(path, reviewers, metrics, interval_s=1)
    assert watcher.check() is None  # unchanged

    new_token_, new_digest = new_token()
    next_file = tmp_path / "next.yaml"
    _write(next_file, "ana", new_digest)
    next_file.replace(path)  # an atomic rename, as a Secret volume swaps files
    assert watcher.check() is True
    assert reviewers.authenticate(old_token) is None
    found = reviewers.authenticate(new_token_)
    assert found is not None
    assert found.id == "ana"

    path.write_text("reviewers: [{id: ana}]\n")  # invalid: no token, no pools
    assert watcher.check() is False
    assert reviewers.authenticate(new_token_) is not None
    path.unlink()
    assert watcher.check() is False
    assert reviewers.authenticate(new_token_) is not None

    registry = metrics.registry
    assert registry.get_sample_value("hitl_reviewers_reloads_total", {"outcome": "success"}) == 1
    assert registry.get_sample_value("hitl_reviewers_reloads_total", {"outcome": "failure"}) == 2


def test_a_change_of_content_within_the_same_second_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.yaml"
    _, digest = new_token()
    _write(path, "ana", digest)
    reviewers = Reviewers.load(path)
    watcher = reviewers_watcher(path, reviewers, GatewayMetrics(CollectorRegistry()), 1)
    stat = path.stat()
    _write(path, "bob", digest)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time; the size differs
    assert watcher.check() is True
    assert [r.id for r in reviewers] == ["bob"]
