"""A compiled decode-and-route path for hitl-gateway: ``decode`` then ``decide`` in one call
into Rust, behind the same interface (a prototype; see native/README.md).

``decode_and_decide(value, policies, ...)`` returns what ``codec.decode`` followed by
``engine.decide`` return (an ``Invalid``, or a ``Decision``); where the port does not
reproduce the Python path (a record that is not strict JSON, a ``created_at`` outside the
plain RFC 3339 form, a policy feature it does not know) it runs the Python path itself.
``python_decode_and_decide`` is that Python path with the same call shape.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from hitl_gateway.codec import decode
from hitl_gateway.models import DeadLetterReason, Invalid, Route
from hitl_gateway.policy.budget import BudgetView, Claim
from hitl_gateway.policy.engine import Decision, Reason, decide
from hitl_gateway.policy.loader import LoadedPolicy, PolicySet
from hitl_gateway.policy.rules import (
    ActiveLearning,
    ConfidenceCascade,
    DeferredReview,
    FullReviewSample,
    LanguageRouting,
    MandatoryReview,
    ReviewAction,
    Reviewed,
    Sampling,
)
from hitl_gateway.policy.schema import DomainPolicy, GoldItem, Pool
from hitl_gateway_native._native import Policies, route

__all__ = [
    "NativePolicies",
    "compile_policies",
    "decode_and_decide",
    "python_decode_and_decide",
    "route",
]

# The fields of each policy model this port knows. A field added to a model later is one the
# port may not honour: a policy of that shape is left to the Python engine (route says so).
KNOWN_FIELDS: dict[type[Any], frozenset[str]] = {
    DomainPolicy: frozenset(
        {
            "domain", "description", "owner", "seed", "mandatory_review", "red_team",
            "pre_launch", "confidence_cascade", "active_learning", "sampling",
            "deferred_review", "languages", "audit", "calibration", "training",
            "expected_daily_volume", "unsigned_decisions",
        }
    ),
    MandatoryReview: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation"}
    ),
    FullReviewSample: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation", "models", "metadata", "first", "action"}
    ),
    ConfidenceCascade: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation", "below", "judge_score_below", "judge_grades", "missing_confidence",
         "action"}
    ),
    ActiveLearning: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation", "band", "boundary", "budget"}
    ),
    Sampling: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation", "rate", "quota", "stratify_by", "strata", "blind"}
    ),
    DeferredReview: frozenset(
        {"pool", "sla", "rubric", "reviewers", "adjudicator_pool", "expected_disagreement",
         "escalation", "rate"}
    ),
    LanguageRouting: frozenset({"pools", "fallback", "skill_first"}),
}  # fmt: skip

_ROUTES = {route.value: route for route in Route}
_REASONS = {reason.value: reason for reason in DeadLetterReason}


class NativePolicies:
    """A ``PolicySet`` compiled once for the native path, with its gold items by id."""

    __slots__ = ("compiled", "gold", "policies")

    def __init__(self, policies: PolicySet) -> None:
        self.policies = policies
        self.compiled = Policies(orjson.dumps(_spec(policies)))
        self.gold: dict[tuple[str, str], GoldItem] = {
            (loaded.version, item.id): item
            for loaded in policies.policies.values()
            for item in loaded.gold
        }


_compiled: dict[int, NativePolicies] = {}


def compile_policies(policies: PolicySet) -> NativePolicies:
    """The native form of ``policies``, compiled on first use (the last few are kept)."""
    found = _compiled.get(id(policies))
    if found is not None and found.policies is policies:
        return found
    native = NativePolicies(policies)
    if len(_compiled) >= 4:
        _compiled.clear()
    _compiled[id(policies)] = native
    return native


def python_decode_and_decide(
    value: bytes | None,
    policies: PolicySet,
    *,
    max_bytes: int,
    max_id_length: int,
    timestamp_ms: int,
    budgets: BudgetView,
) -> Invalid | Decision:
    """``codec.decode`` then ``engine.decide``: the Python path."""
    verdict = decode(value, max_bytes=max_bytes, max_id_length=max_id_length)
    if isinstance(verdict, Invalid):
        return verdict
    return decide(verdict, policies, timestamp_ms=timestamp_ms, budgets=budgets)


def decode_and_decide(
    value: bytes | None,
    policies: PolicySet,
    *,
    max_bytes: int,
    max_id_length: int,
    timestamp_ms: int,
    budgets: BudgetView,
) -> Invalid | Decision:
    """The native path, with the same call shape and result as ``python_decode_and_decide``."""
    native = compile_policies(policies)
    out = route(native.compiled, value, max_bytes, max_id_length, timestamp_ms, budgets)
    verdict = from_native(out, native)
    if verdict is not None:
        return verdict
    return python_decode_and_decide(
        value,
        policies,
        max_bytes=max_bytes,
        max_id_length=max_id_length,
        timestamp_ms=timestamp_ms,
        budgets=budgets,
    )


def from_native(out: tuple[Any, ...], native: NativePolicies) -> Invalid | Decision | None:
    """``route``'s tuple as the gateway's types (None: the native path declined)."""
    kind = out[0]
    if kind == 0:
        return Invalid(_REASONS[out[1]], out[2])
    if kind == 2:
        return None
    # Built with _make (tuple.__new__), not the generated __new__: a third of the cost.
    fields = list(out[1:])
    fields[1] = _ROUTES[fields[1]]
    fields[2] = tuple([_reason(r) for r in fields[2]])
    if fields[11]:
        fields[11] = tuple([Claim(key, cap, ttl) for key, cap, ttl in fields[11]])
    if fields[13] is not None:
        fields[13] = native.gold[(fields[3], fields[13])]
    return _decision(fields)


_reason = Reason._make
_decision = Decision._make


# -- compiling a policy set -----------------------------------------------------------------


def _unknown_fields(model: Any) -> list[str]:
    known = KNOWN_FIELDS.get(type(model))
    if known is None:
        return [type(model).__name__]
    return sorted(set(type(model).model_fields) - known)


def _spec_of(rule: Reviewed, *, hold: bool) -> dict[str, Any]:
    return {
        "pool": rule.pool,
        "reviewers": rule.reviewers,
        "adjudicator_pool": rule.adjudicator_pool,
        "sla_ms": int(rule.sla * 1000),
        "rubric": rule.rubric,
        "hold": hold,
    }


def _policy_spec(loaded: LoadedPolicy, policies: PolicySet) -> dict[str, Any]:
    p = loaded.policy
    unknown = _unknown_fields(p) + _unknown_fields(p.languages)
    unknown += [f"{name}.{f}" for name, rule in p.rules() for f in _unknown_fields(rule)]
    spec: dict[str, Any] = {
        "domain": p.domain,
        "version": loaded.version,
        "seed": p.seed,
        "audit_full": p.audit.level == "full",
        "mandatory": None,
        "full_review": [],
        "cascade": None,
        "active_learning": None,
        "sampling": None,
        "deferred": None,
        "languages": {
            "pools": dict(p.languages.pools),
            "skill_first": list(p.languages.skill_first),
            "fallback": p.languages.fallback or policies.routing.review_defaults.fallback_pool,
        },
        "gold": None,
        "unsupported": f"policy fields not ported: {', '.join(unknown)}" if unknown else None,
    }
    if (m := p.mandatory_review) is not None:
        spec["mandatory"] = {
            "spec": _spec_of(m, hold=True),
            "detail": f"every '{p.domain}' output is reviewed by {m.reviewers} reviewer(s)",
        }
    for name, full in (("red_team", p.red_team), ("pre_launch", p.pre_launch)):
        if full is not None:
            spec["full_review"].append(
                {
                    "name": name,
                    "spec": _spec_of(full, hold=full.action is ReviewAction.HOLD),
                    "models": list(full.models),
                    "metadata": list(full.metadata.items()),
                    "tags_text": "tags "
                    + ", ".join(f"{k}={v}" for k, v in sorted(full.metadata.items())),
                    "first": full.first,
                }
            )
    if (c := p.confidence_cascade) is not None:
        spec["cascade"] = {
            "spec": _spec_of(c, hold=c.action is ReviewAction.HOLD),
            "below": c.below,
            "below_repr": f"{c.below}",
            "missing_review": c.missing_confidence == "review",
            "judge_score_below": c.judge_score_below,
            "judge_score_below_repr": f"{c.judge_score_below}",
            "judge_grades": list(c.judge_grades),
            "judge_grades_repr": f"{list(c.judge_grades)}",
        }
    if (a := p.active_learning) is not None:
        low, high = a.band
        spec["active_learning"] = {
            "spec": _spec_of(a, hold=False),
            "low": low,
            "high": high,
            "low_repr": f"{low}",
            "high_repr": f"{high}",
            "boundary": a.boundary,
            "window": a.budget.window,
            "count": a.budget.count,
        }
    if (s := p.sampling) is not None:
        quota: dict[str, Any] | None = None
        if s.quota is not None:
            gate: float | None = None
            volume = p.expected_daily_volume
            if volume:
                expected = volume * s.quota.window / 86_400
                gate = min(1.0, 2 * s.quota.count / expected) if expected else 1.0
            quota = {
                "count": s.quota.count,
                "window": s.quota.window,
                "gate": gate,
                "stratify_by": list(s.stratify_by),
                "stratum_cap": math.ceil(s.quota.count / s.strata),
            }
        spec["sampling"] = {
            "spec": _spec_of(s, hold=False),
            "blind": s.blind,
            "rate": s.rate,
            "rate_repr": f"{s.rate}",
            "quota": quota,
        }
    if (d := p.deferred_review) is not None:
        deferred = {"spec": _spec_of(d, hold=False), "rate": d.rate, "rate_repr": f"{d.rate}"}
        spec["deferred"] = deferred
    if p.calibration.gold is not None:
        spec["gold"] = {"rate": p.calibration.gold.rate, "ids": [g.id for g in loaded.gold]}
    return spec


def _pool_spec(pool: Pool) -> dict[str, Any]:
    skills = set(pool.skills)
    return {
        "name": pool.name,
        "languages": [lang.lower() for lang in pool.languages],
        "any_language": "*" in pool.languages,
        "skills": sorted(skills),
        "skill_text": f"skill {', '.join(sorted(skills)) or '(none)'}",
    }


def _spec(policies: PolicySet) -> dict[str, Any]:
    ordered = sorted(policies.pools.items(), key=lambda item: (item[1].cost_per_hour_usd, item[0]))
    return {
        "version": policies.version,
        "policies": {
            domain: _policy_spec(loaded, policies) for domain, loaded in policies.policies.items()
        },
        "unknown_policy": policies.routing.unknown_domains.policy,
        "pools": [_pool_spec(pool) for _, pool in ordered],
    }
