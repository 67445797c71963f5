"""Redis wrapper for calibration windows: rolling evidence and the summaries metrics read.

Shared by every instance (a domain's decisions arrive on every partition). Per closing
decision, in order:

1. push its evidence onto capped lists (LPUSH + LTRIM) in one Lua script, guarded by the
   decision id so a replayed decision (its transaction aborted, or a new owner re-reading
   it) is never counted twice;
2. recompute each touched window's summary (pure functions in ``calibration/``);
3. store each summary with its status; a status change is recorded with the decision that
   caused it, so a replay of that decision reports the change again and its events land in
   the replay's transaction (exactly one committed ``recalibrate`` per change).

Windows survive gateway restarts (Redis keeps them, AOF on); losing Redis restarts them
empty ("insufficient data" until refilled). The full history stays on ``hitl.training``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from hitl_gateway.calibration.agreement import reviewer_agreement
from hitl_gateway.calibration.evidence import Evidence
from hitl_gateway.calibration.judge import Status, assess
from hitl_gateway.errors import redis_errors
from hitl_gateway.policy.schema import Calibration, Rubric
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

SEEN_TTL_S = 30 * 86_400
ALL_STRATA = "all"

# KEYS[1]: the decision's seen marker, KEYS[2..]: lists. ARGV[1]: ttl; then value, window per
# list. Returns 1 when recorded, 0 when this decision was recorded before (a replay).
_PUSH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
for i = 2, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[2 * i - 2])
  redis.call('LTRIM', KEYS[i], 0, tonumber(ARGV[2 * i - 1]) - 1)
end
return 1
"""

# KEYS[1]: a summary hash, KEYS[2]: the registry of summaries. ARGV[1]: status, ARGV[2]: the
# decision id, ARGV[3]: JSON object of string fields. Returns {changed, previous status}; a
# replay of the decision that changed the status reports the change again.
_SUMMARY = """
local current = redis.call('HGET', KEYS[1], 'status') or ''
local by = redis.call('HGET', KEYS[1], 'by') or ''
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[1], k, v) end
redis.call('SADD', KEYS[2], KEYS[1])
if current == ARGV[1] then
  if by == ARGV[2] then return {1, redis.call('HGET', KEYS[1], 'previous') or ''} end
  return {0, current}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'by', ARGV[2], 'previous', current)
return {1, current}
"""


@dataclass(frozen=True, slots=True)
class Change:
    """A summary whose status this decision changed."""

    kind: str  # judge | consensus
    labels: dict[str, str]  # domain+stratum, or pool+reviewer
    previous: str
    status: str
    summary: dict[str, str]


@dataclass(frozen=True, slots=True)
class Summary:
    kind: str  # judge | alpha | consensus | gold
    labels: dict[str, str]
    fields: dict[str, str]


_LABELS = {
    "judge": ("domain", "stratum"),
    "alpha": ("pool", "rubric", "dimension"),
    "consensus": ("pool", "reviewer"),
    "gold": ("pool", "reviewer"),
}


class CalibrationStore(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = f"{settings.key_prefix}cal:"
        self._push = self._r.register_script(_PUSH)
        self._summary = self._r.register_script(_SUMMARY)

    async def record(
        self,
        decision_id: str,
        ev: Evidence,
        cal: Calibration,
        rubrics: Mapping[str, Rubric] | None = None,
    ) -> list[Change]:
        """``rubrics``: routing.yaml's declarations, which decide how alpha is measured."""
        pushes = _pushes(ev, cal)
        if not pushes:
            return []
        with redis_errors("redis calibration update"):
            keys = [self._p + "seen:" + decision_id] + [self._list(k, s) for k, s, _, _ in pushes]
            args: list[Any] = [SEEN_TTL_S]
            for _, _, value, window in pushes:
                args += [value, window]
            await self._push(keys=keys, args=args)
            windows = sorted({(k, s) for k, s, _, _ in pushes})
            async with self._r.pipeline(transaction=False) as pipe:
                for kind, subject in windows:
                    pipe.lrange(self._list(kind, subject), 0, -1)
                contents = await pipe.execute()
            changes: list[Change] = []
            for (kind, subject), raw in zip(windows, contents, strict=True):
                status, fields = _summarise(kind, subject, [bytes(x) for x in raw], cal, rubrics)
                key = f"{self._p}sum:{kind}:{subject}"
                changed, previous = await self._summary(
                    keys=[key, self._p + "summaries"],
                    args=[status, decision_id, orjson.dumps(fields)],
                )
                if int(changed):
                    labels = dict(zip(_LABELS[kind], subject.split("|"), strict=True))
                    previous_text = previous.decode() if isinstance(previous, bytes) else ""
                    changes.append(Change(kind, labels, previous_text, status, fields))
        return changes

    async def summaries(self) -> list[Summary]:
        """Every stored summary (the observer turns them into gauges)."""
        with redis_errors("redis calibration read"):
            names = sorted(await self._r.smembers(self._p + "summaries"))
            async with self._r.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(name)
                contents = await pipe.execute()
        out = []
        for name, raw in zip(names, contents, strict=True):
            text = name.decode() if isinstance(name, bytes) else str(name)
            kind, subject = text.removeprefix(self._p + "sum:").split(":", 1)
            if kind not in _LABELS or not raw:
                continue
            labels = dict(zip(_LABELS[kind], subject.split("|"), strict=True))
            out.append(Summary(kind, labels, {k.decode(): v.decode() for k, v in raw.items()}))
        return out

    def _list(self, kind: str, subject: str) -> str:
        return f"{self._p}{kind}:{subject}"


def _pushes(ev: Evidence, cal: Calibration) -> list[tuple[str, str, bytes, int]]:
    """(kind, subject, value, window) for every list this evidence extends."""
    out: list[tuple[str, str, bytes, int]] = []
    if ev.judge is not None:
        pair = orjson.dumps([ev.judge.judge, ev.judge.human])
        out.append(("judge", f"{_clean(ev.judge.domain)}|{ALL_STRATA}", pair, cal.window))
        if ev.judge.stratum:
            subject = f"{_clean(ev.judge.domain)}|{_clean(ev.judge.stratum)}"
            out.append(("judge", subject, pair, cal.window))
    for unit in ev.units:
        subject = "|".join(_clean(x) for x in (unit.pool, unit.rubric, unit.dimension))
        out.append(("alpha", subject, orjson.dumps(unit.values), cal.window))
    for check in ev.checks:
        subject = f"{_clean(check.pool)}|{_clean(check.reviewer)}"
        out.append(("consensus", subject, b"1" if check.agreed else b"0", cal.window))
    if ev.gold is not None:
        subject = f"{_clean(ev.gold.pool)}|{_clean(ev.gold.reviewer)}"
        out.append(("gold", subject, b"1" if ev.gold.correct else b"0", cal.window))
    return out


def _summarise(
    kind: str,
    subject: str,
    raw: Sequence[bytes],
    cal: Calibration,
    rubrics: Mapping[str, Rubric] | None,
) -> tuple[str, dict[str, str]]:
    """(status, string fields) for one window; newest first in ``raw``."""
    if kind == "judge":
        pairs = [tuple(orjson.loads(x)) for x in raw]
        report = assess(pairs, cal.min_cases, cal.judge_threshold)
        fields = {"cases": str(report.cases), "threshold": str(cal.judge_threshold)}
        if report.agreement is not None and report.interval and report.kappa is not None:
            fields |= {
                "agreement": repr(report.agreement),
                "kappa": repr(report.kappa),
                "low": repr(report.interval[0]),
                "high": repr(report.interval[1]),
            }
        return report.status.value, fields
    if kind == "alpha":
        _, rubric, dimension = subject.split("|")
        units = [orjson.loads(x) for x in raw]
        found = reviewer_agreement(units, dimension, (rubrics or {}).get(rubric))
        return "measured", {
            # Fields are overwritten, never deleted: "" says there is no alpha (yet).
            "alpha": "" if found.alpha is None else repr(found.alpha),
            "items": str(found.items),
            "metric": found.metric,
            "excluded": str(found.excluded),
        }
    hits = [x == b"1" for x in raw]
    share = sum(hits) / len(hits)
    if kind == "gold":
        return "measured", {"accuracy": repr(share), "items": str(len(hits))}
    if len(hits) < cal.reviewer_min_ratings:
        status = Status.INSUFFICIENT_DATA.value
    else:
        status = "flagged" if share < cal.reviewer_threshold else "ok"
    return status, {
        "agreement": repr(share),
        "ratings": str(len(hits)),
        "threshold": str(cal.reviewer_threshold),
    }


def _clean(value: str) -> str:
    """Subjects are joined with '|' and keys with ':'; keep both out of the parts."""
    return value.replace("|", "/").replace(":", "/") if value else "-"
