"""What a rule selects, and the budget keys its quotas count in (pure, shared by the engine
and by routing's prefetch of budget state). Draws are keyed hashes of (policy version, seed,
rule, record id), never ``random()``, so the same record is drawn the same way again."""

from __future__ import annotations

import hashlib

from hitl_gateway.models import InputRecord
from hitl_gateway.policy.loader import LoadedPolicy, PolicySet
from hitl_gateway.policy.rules import FullReviewSample, Sampling

_TTL_GRACE_S = 86_400


def unit_hash(version: str, seed: str, rule: str, item_id: str) -> float:
    """A uniform draw in [0, 1) that is a pure function of its arguments."""
    digest = hashlib.blake2b(
        item_id.encode(), key=f"{version}|{seed}|{rule}".encode()[:64], digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def candidate_claim_keys(record: InputRecord, policies: PolicySet, timestamp_ms: int) -> list[str]:
    """Every budget key ``decide`` might read for this record (to prefetch in one round)."""
    loaded = policies.policy_for(record.domain)
    if loaded is None:
        return []
    p = loaded.policy
    keys: list[str] = []
    for name, rule in (("red_team", p.red_team), ("pre_launch", p.pre_launch)):
        if rule is not None and rule.first is not None and selects(rule, record):
            keys.append(first_n_key(loaded, name, record))
    if p.active_learning is not None:
        keys.append(window_key(loaded, "active_learning", p.active_learning.budget.window,
                                timestamp_ms))  # fmt: skip
    if p.sampling is not None and p.sampling.quota is not None:
        base = window_key(loaded, "sampling", p.sampling.quota.window, timestamp_ms)
        keys.append(base)
        if p.sampling.stratify_by:
            keys.append(f"{base}|{stratum_of(record, p.sampling)}")
    return keys


def selects(rule: FullReviewSample, record: InputRecord) -> bool:
    if rule.models and record.model in rule.models:
        return True
    meta = record.metadata or {}
    return bool(rule.metadata) and all(meta.get(k) == v for k, v in rule.metadata.items())


def selector_text(rule: FullReviewSample, record: InputRecord) -> str:
    if rule.models and record.model in rule.models:
        return f"model {record.model}"
    return "tags " + ", ".join(f"{k}={v}" for k, v in sorted(rule.metadata.items()))


def stratum_of(record: InputRecord, rule: Sampling) -> str:
    values = []
    for path in rule.stratify_by:
        if path == "judge.grade":
            value = record.judge.grade if record.judge else None
        elif path.startswith("metadata."):
            value = (record.metadata or {}).get(path.removeprefix("metadata."))
        else:
            value = getattr(record, path)
        values.append(f"{path}={value if value is not None else '-'}")
    return ",".join(values)


def window_key(loaded: LoadedPolicy, rule: str, window_s: float, timestamp_ms: int) -> str:
    window_id = int(timestamp_ms // (window_s * 1000))
    return f"{loaded.policy.domain}|{rule}|{int(window_s)}s|{window_id}"


def first_n_key(loaded: LoadedPolicy, rule: str, record: InputRecord) -> str:
    return f"{loaded.policy.domain}|{rule}|{record.model or '-'}"


def ttl(window_s: float) -> int:
    return int(window_s * 2) + _TTL_GRACE_S
