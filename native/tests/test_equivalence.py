"""The native path routes exactly like the Python engine: over the load tests' record mix and
over generated edge records, ``route``'s verdict equals ``codec.decode`` + ``engine.decide``
field by field, or the native path declines (and only for the reasons it may decline).

Run with ``make native-test`` (it builds the extension first); an unbuilt extension fails
here, it is never skipped.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hitl_gateway_native import (
    compile_policies,
    decode_and_decide,
    from_native,
    python_decode_and_decide,
    route,
)
from hitl_gateway_native._native import format_g4
from hitl_gateway_native._native import unit_hash as native_unit_hash
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hitl_gateway.codec import decode
from hitl_gateway.models import Invalid
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import Decision
from hitl_gateway.policy.loader import PolicySet, load_policy_set
from hitl_gateway.policy.selection import candidate_claim_keys, unit_hash

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "loadtest"))
from records import JUDGE_GRADES, MODELS, make_stream  # noqa: E402

SHIPPED = load_policy_set(ROOT / "configs" / "policies")
VARIANTS = load_policy_set(Path(__file__).parent / "variants" / "policies")
POLICY_SETS = {"shipped": SHIPPED, "variants": VARIANTS}

# Why the native path may decline a record (the Python path then decides).
ALLOWED_DECLINES = {"not strict JSON", "created_at outside the ported subset", "negative zero"}

WEEK_MS = 604_800_000
T0 = 1_764_000_000_000


def verdict_fields(verdict: Invalid | Decision) -> dict[str, Any]:
    if isinstance(verdict, Invalid):
        return {"kind": "invalid", "reason": verdict.reason, "message": verdict.message}
    return {"kind": "decision", **verdict._asdict()}


def assert_same(
    value: bytes | None,
    policies: PolicySet,
    *,
    max_bytes: int = 1 << 20,
    max_id_length: int = 4_096,
    timestamp_ms: int = T0,
    ledger: MemoryLedger | None = None,
    declines: Counter[str] | None = None,
) -> Invalid | Decision:
    """The native verdict equals the Python one, field by field (or the native path
    declined for an allowed reason); returns the Python verdict."""
    ledger = ledger if ledger is not None else MemoryLedger()
    kwargs: dict[str, Any] = {
        "max_bytes": max_bytes,
        "max_id_length": max_id_length,
        "timestamp_ms": timestamp_ms,
        "budgets": ledger,
    }
    expected = python_decode_and_decide(value, policies, **kwargs)
    native = compile_policies(policies)
    out = route(native.compiled, value, max_bytes, max_id_length, timestamp_ms, ledger)
    got = from_native(out, native)
    if isinstance(expected, Invalid):
        outcome = f"dead letter {expected.reason}"
    else:
        outcome = f"{expected.route} by {expected.reasons[0].rule}"
    if currently_in_test_context():
        event(f"{'declined' if got is None else 'native'}: {outcome}")
    if got is None:
        assert out[1] in ALLOWED_DECLINES, f"declined for {out[1]!r}: {value!r}"
        if declines is not None:
            declines[out[1]] += 1
    else:
        want, have = verdict_fields(expected), verdict_fields(got)
        for name in want.keys() | have.keys():
            assert have.get(name) == want.get(name), (
                f"{name}: native {have.get(name)!r} != python {want.get(name)!r}\nrecord: {value!r}"
            )
        assert got == expected
    # The shim as a caller would use it: always the Python verdict.
    assert decode_and_decide(value, policies, **kwargs) == expected
    return expected


# -- the load tests' mix -------------------------------------------------------------------


# The mix's domains as the variant policies' (an unknown one goes to catch-all).
TO_VARIANTS = {
    b'"support-chat"': b'"tagged-launch"',
    b'"ticket-classifier"': b'"boundary-learner"',
    b'"general-assistant"': b'"quota-volume"',
    b'"legal-drafts"': b'"gold-heavy"',
    b'"translations"': b'"boundary-learner"',
}


def _variant(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    for old, new in TO_VARIANTS.items():
        value = value.replace(old, new)
    return value


@pytest.mark.parametrize(("which", "seed"), [("shipped", 3), ("shipped", 11), ("variants", 5)])
def test_the_record_mix_routes_alike(which: str, seed: int) -> None:
    """Every record of the 1 KB mix (5% malformed), with budgets that fill as they are
    claimed; the native path declines none of the well-formed ones."""
    declines: Counter[str] = Counter()
    ledger = MemoryLedger()
    routes: Counter[str] = Counter()
    policies = POLICY_SETS[which]
    for n, record in enumerate(make_stream(6_000, run_id=f"mix{seed}", seed=seed,
                                           invalid_share=0.05)):  # fmt: skip
        before = sum(declines.values())
        value = record.value if which == "shipped" else _variant(record.value)
        verdict = assert_same(
            value, policies, timestamp_ms=T0 + n * 60_000, ledger=ledger, declines=declines
        )
        if record.valid:
            assert sum(declines.values()) == before, "a well-formed record was declined"
        if isinstance(verdict, Decision):
            routes[verdict.route] += 1
            if verdict.claims:
                ledger.apply(str(orjson.loads(value or b"{}")["id"]), verdict.claims)
        else:
            routes[verdict.reason] += 1
    assert set(declines) <= {"not strict JSON"}
    # The mix reaches every route.
    assert {"pass", "hold", "deliver_and_review"} <= set(routes)


def test_the_mix_in_a_small_budget_routes_alike() -> None:
    """Budgets nearly used up: the active-learning admission by uncertainty, a full quota,
    the first N records of a model already taken."""
    for n, record in enumerate(make_stream(3_000, run_id="tight", seed=5)):
        verdict = decode(record.value, max_bytes=1 << 20, max_id_length=4_096)
        assert not isinstance(verdict, Invalid)
        ledger = MemoryLedger()
        ts = T0 + n * 3_600_000
        for i, key in enumerate(candidate_claim_keys(verdict, SHIPPED, ts)):
            used = (n * 7 + i * 13) % 900
            members = [verdict.id] if (n + i) % 5 == 0 else []
            ledger.preload(key, used, members)
        assert_same(record.value, SHIPPED, timestamp_ms=ts, ledger=ledger)


# -- generated edge records ----------------------------------------------------------------

DOMAINS = [
    *sorted({*SHIPPED.policies, *VARIANTS.policies}),
    *("unknown-domain", "", "Support-Chat", "x" * 129),
]


def _thresholds() -> list[float]:
    """Every confidence or judge-score threshold, band edge and boundary the policies name."""
    found: set[float | None] = {0.0, 1.0}
    for policies in POLICY_SETS.values():
        for loaded in policies.policies.values():
            p = loaded.policy
            if p.confidence_cascade is not None:
                found |= {p.confidence_cascade.below, p.confidence_cascade.judge_score_below}
            if p.active_learning is not None:
                found |= {*p.active_learning.band, p.active_learning.boundary}
    return sorted(t for t in found if t is not None)


def _caps() -> list[int]:
    """Every budget cap the policies name (quotas, budgets, the first N)."""
    found = {1}
    for policies in POLICY_SETS.values():
        for loaded in policies.policies.values():
            p = loaded.policy
            for rule in (p.red_team, p.pre_launch):
                if rule is not None and rule.first is not None:
                    found.add(rule.first)
            if p.active_learning is not None:
                found.add(p.active_learning.budget.count)
            if p.sampling is not None and p.sampling.quota is not None:
                found |= {
                    p.sampling.quota.count,
                    math.ceil(p.sampling.quota.count / p.sampling.strata),
                }
    return sorted(found)


THRESHOLDS = _thresholds()
NEAR = [math.nextafter(t, d) for t in THRESHOLDS for d in (-math.inf, math.inf)]
CONFIDENCES = st.one_of(
    st.sampled_from(THRESHOLDS + [c for c in NEAR if 0.0 <= c <= 1.0]),
    st.floats(0.0, 1.0),
    st.floats(-2.0, 3.0),
    st.integers(-2, 3),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.just(10**30),
    st.just(-(2**63) - 1),
)
LANGUAGES = st.one_of(
    st.sampled_from(
        ["en", "de", "de-AT", "DE", "De-at", "pt-BR", "pt", "PT-br", "ja", "fr-CA", "es-419",
         "zz", "tlh", "x", "en-", "-en", "en--gb", "abcdefghi", "en-abcdefghi", "a!", "en\n",
         "de-1996", "zh-Hant-TW", "e\u00e9", "de" + "-a" * 31, "de" + "-a" * 32]
    ),
    st.from_regex(r"\A[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}\Z"),
    st.text(max_size=10),
    st.none(),
    st.integers(),
)  # fmt: skip
SHORT_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["", "x" * 64, "x" * 65, "é" * 65]))
JUDGES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "score": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                               st.sampled_from([0.7, *NEAR]), st.integers(-5, 5), st.none(),
                               st.booleans(), st.text(max_size=3)),
            "grade": st.one_of(st.sampled_from(list(JUDGE_GRADES)), SHORT_TEXT, st.none(),
                               st.integers()),
            "model": st.one_of(st.just("judge-v2"), st.text(max_size=3), st.none(),
                               st.just("m" * 257), st.integers()),
            "extra": st.integers(),
        },
    ),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=3),
    st.integers(),
)  # fmt: skip
METADATA = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["tenant", "channel", "red_team", "service", "k.dot", ""]),
        st.one_of(st.sampled_from(["true", "false", "web", "api", ""]), st.text(max_size=4),
                  st.integers(), st.none(), st.booleans()),
        max_size=4,
    ),
    st.lists(st.text(max_size=2), max_size=2),
    st.text(max_size=3),
)  # fmt: skip
CREATED_AT = st.one_of(
    st.sampled_from(
        ["2026-11-24T12:00:00Z", "2026-11-24T12:00:00.123456+01:00", "2024-02-29T00:00:00Z",
         "2026-02-29T00:00:00Z", "2026-11-24T24:00:00Z", "2026-11-24 12:00:00Z",
         "2026-11-24T12:00:00", "2026-11-24", "0000-01-01T00:00:00Z", "x", "",
         "2026-11-24T12:00:00+14:59", "2026-11-24T12:00:00-00:00", "1900-02-29T00:00:00Z",
         "2000-02-29T00:00:00Z", "9999-12-31T23:59:59+14:00", "2026-11-24T12:00:00.1234567Z",
         "2026-11-24T12:00:00+15:00", "2026-11-24t12:00:00z"]
    ),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.integers(),
    st.none(),
    st.booleans(),
)  # fmt: skip
IDS = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["", "a" * 65, "a" * 4_096, "a" * 4_097, "é" * 70]),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=1),
)


OUTPUT = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=2), c, max_size=2),
    max_leaves=6,
)
# Well-typed routing fields: what reaches the engine.
WELL_TYPED = {
    "id": st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["a" * 65, "é" * 70])),
    "domain": st.sampled_from(DOMAINS),
    "confidence": st.one_of(
        st.sampled_from(THRESHOLDS + [c for c in NEAR if 0.0 <= c <= 1.0]),
        st.floats(0.0, 1.0),
        st.sampled_from([0, 1]),
        st.none(),
    ),
    "language": st.one_of(
        st.sampled_from(["en", "de", "de-AT", "DE", "pt-BR", "pt", "PT-br", "pt-PT", "ja", "fr",
                         "fr-CA", "es-419", "zz", "tlh", "zh-Hant-TW"]),
        st.from_regex(r"\A[A-Za-z]{2,3}(-[A-Za-z0-9]{1,4}){0,2}\Z"),
        st.none(),
    ),
    "model": st.one_of(st.sampled_from(MODELS), st.text(max_size=4), st.none()),
    "judge": st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {},
            optional={
                "score": st.one_of(st.floats(-1.0, 2.0), st.sampled_from([0.2, 0.7, *NEAR]),
                                   st.none()),
                "grade": st.one_of(st.sampled_from(list(JUDGE_GRADES)), st.text(max_size=2),
                                   st.none()),
                "model": st.sampled_from(["judge-v2", None]),
            },
        ),
    ),
    "metadata": st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["tenant", "channel", "red_team", "service"]),
            st.sampled_from(["true", "false", "web", "api", "", "tenant-3", "tenant-4"]),
            max_size=4,
        ),
    ),
    "created_at": st.sampled_from(["2026-11-24T12:00:00Z", "2026-11-24T12:00:00.5-05:30",
                                   None]),
    "output": OUTPUT,
}  # fmt: skip
# Any type, any shape.
ANY_TYPE = {
    "id": IDS,
    "domain": st.one_of(st.sampled_from(DOMAINS), st.integers(), st.none()),
    "confidence": CONFIDENCES,
    "language": LANGUAGES,
    "model": st.one_of(st.sampled_from(MODELS), st.text(max_size=4), st.none(), st.integers(),
                       st.just("m" * 257)),
    "judge": JUDGES,
    "metadata": METADATA,
    "created_at": CREATED_AT,
    "output": OUTPUT,
}  # fmt: skip


@st.composite
def record_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-typed records (routed), the rest with fields of any type or missing."""
    well_typed = draw(st.integers(0, 9)) < 7
    fields: dict[str, Any] = {}
    for name, strategy in (WELL_TYPED if well_typed else ANY_TYPE).items():
        required = name in ("id", "domain")
        if (well_typed and required) or draw(st.integers(0, 9)) < (9 if required else 6):
            fields[name] = draw(strategy)
    return fields


# Literals spliced in where a confidence or judge score goes (most are not strict JSON).
RAW_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"-0",
               b"0e0", b"1E0", b"1.0e+0", b"123456789012345678901234567890",
               b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809",
               b"0.60000000000000000000001", b"0.59999999999999999999999", b"01", b"1.",
               b".5", b"+1", b"0x1"]  # fmt: skip


@st.composite
def values(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 19))
    obj = draw(record_objects())
    body = json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=(",", ":")).encode()
    if kind <= 9:
        return body
    if kind == 10:  # a raw number literal in a routing field
        raw = draw(st.sampled_from(RAW_NUMBERS))
        field = draw(st.sampled_from([b"confidence", b"score"]))
        head = b'{"id":"n1","domain":"support-chat","language":"en",'
        if field == b"score":
            return head + b'"judge":{"score":' + raw + b',"grade":"D"}}'
        return head + b'"confidence":' + raw + b"}"
    if kind == 11:  # nesting around the limit, in the record or as the record
        levels = draw(st.integers(120, 140))
        opener, closer = draw(st.sampled_from([(b'{"a":', b"}"), (b"[", b"]")]))
        nested = opener * levels + b"1" + closer * levels
        if draw(st.booleans()):
            return nested
        return body[:-1] + (b',"output":' if obj else b'"output":') + nested + b"}"
    if kind == 12:  # not an object
        scalar = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                           st.booleans(), st.none(), st.text(max_size=3))  # fmt: skip
        return json.dumps(draw(st.one_of(st.lists(scalar, max_size=2), scalar))).encode()
    if kind == 13:  # bytes that are not UTF-8, or surrogates
        at = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                     b"\xc0\xaf", b"\x00", b"\x7f", b"\\ud800", b"\\udc00",
                                     b"\\ud800\\udc00", b"\xef\xbb\xbf"]))  # fmt: skip
        return body[:at] + junk + body[at:]
    if kind == 14:  # truncated, or trailing data
        at = draw(st.integers(0, len(body)))
        return body[:at] if draw(st.booleans()) else body + b" " + body[:at]
    if kind == 15:  # a key twice (the last wins)
        return b'{"id":"dup","domain":5,' + body[1:] if len(body) > 2 else b'{"id":1,"id":"a"}'
    if kind == 16:
        return None
    if kind == 17:  # whitespace and escapes
        return b" \n\t" + body.replace(b'":', b'" : ') + b"\r\n"
    if kind == 18:  # standard-library JSON (NaN, Infinity allowed)
        obj["confidence"] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 0.5]))
        return json.dumps(obj).encode()
    return body.replace(b"e", b"\\u0065", 1)


SETTINGS = settings(
    max_examples=int(os.environ.get("NATIVE_EXAMPLES", "5000")),  # per policy set
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("which", sorted(POLICY_SETS))
@SETTINGS
@given(
    value=values(),
    max_bytes=st.sampled_from([*[1 << 20] * 12, 40, 0]),
    max_id_length=st.sampled_from([*[4_096] * 6, 64, 1]),
    timestamp=st.one_of(
        st.integers(-(2**53), 2**53),
        st.integers(-3, 3).map(lambda k: T0 - T0 % WEEK_MS + k),
    ),
    used=st.lists(st.integers(0, 900), max_size=3),
    member=st.booleans(),
)
@example(value=b'{"id":"a","domain":"support-chat","confidence":0.6}', max_bytes=1 << 20,
         max_id_length=4_096, timestamp=T0, used=[], member=False)  # fmt: skip
def test_edge_records_route_alike(  # noqa: PLR0917
    which: str,
    value: bytes | None,
    max_bytes: int,
    max_id_length: int,
    timestamp: int,
    used: list[int],
    member: bool,
) -> None:
    policies = POLICY_SETS[which]
    ledger = MemoryLedger()
    record = decode(value, max_bytes=max_bytes, max_id_length=max_id_length)
    if not isinstance(record, Invalid):
        for key, taken in zip(
            candidate_claim_keys(record, policies, timestamp), used, strict=False
        ):
            ledger.preload(key, taken, [record.id] if member else [])
    assert_same(
        value,
        policies,
        max_bytes=max_bytes,
        max_id_length=max_id_length,
        timestamp_ms=timestamp,
        ledger=ledger,
    )


@pytest.mark.parametrize("which", sorted(POLICY_SETS))
def test_every_threshold_and_budget_edge_routes_alike(which: str) -> None:
    """A grid: every domain, with a confidence and a judge score at each threshold and the
    floats either side of it, and each budget used up to none, one, all but one and all of
    each cap the policies name, the record holding a slot or not."""
    policies = POLICY_SETS[which]
    caps = _caps()
    used_levels = sorted({0, 1, *(c - 1 for c in caps), *caps, *(c // 2 for c in caps)})
    points = sorted({*THRESHOLDS, *(math.nextafter(t, d) for t in THRESHOLDS
                                    for d in (-math.inf, math.inf))})  # fmt: skip
    checked = 0
    for domain in [*sorted(policies.policies), "unknown-domain"]:
        for n, confidence in enumerate([None, *points]):
            for score, grade, language in [(None, None, "en"), (points[n % len(points)], "D", "de"),
                                           (0.5, "A", "pt-BR"), (0.0, None, None)]:  # fmt: skip
                obj: dict[str, Any] = {"id": f"g{n}", "domain": domain, "confidence": confidence,
                                       "language": language,
                                       "model": ["search-v2", "", None, "chat-v12"][n % 4],
                                       "judge": {"score": score, "grade": grade},
                                       "metadata": {"red_team": "true", "channel": "web",
                                                    "tenant": "tenant-3"}}  # fmt: skip
                value = orjson.dumps(obj)
                record = decode(value, max_bytes=1 << 20, max_id_length=4_096)
                if isinstance(record, Invalid):  # below 0 or above 1
                    assert_same(value, policies)
                    continue
                for used in used_levels:
                    for member in (False, True):
                        ledger = MemoryLedger()
                        for key in candidate_claim_keys(record, policies, T0):
                            ledger.preload(key, used, [record.id] if member else [])
                        assert_same(value, policies, ledger=ledger)
                        checked += 1
    assert checked > 1_000


# -- the building blocks ----------------------------------------------------------------------


@settings(max_examples=2_000, deadline=None)
@given(
    x=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0078125, 0.03125, 9.9995, 99995.0, 1e-5, 0.0001, -0.0]),
    )
)
def test_format_g4_is_pythons(x: float) -> None:
    assert format_g4(x) == f"{x:.4g}"


@settings(max_examples=500, deadline=None)
@given(version=st.text(max_size=70), seed=st.text(max_size=10), rule=st.text(max_size=10),
       item_id=st.text(max_size=20))  # fmt: skip
def test_unit_hash_is_pythons(version: str, seed: str, rule: str, item_id: str) -> None:
    assert native_unit_hash(version, seed, rule, item_id) == unit_hash(version, seed, rule, item_id)
