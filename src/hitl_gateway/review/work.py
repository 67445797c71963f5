"""Redis wrapper: each reviewer's day of work, for the workspace's "my work" page.

Per reviewer and UTC day: counts by verdict, seconds on items (where a lease measured them),
and the last 200 items decided. Kept eight days. Written when a decision submitted through
the review API or the workspace has its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.models import HoldMeta
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

KEEP_S = 8 * 86_400
LAST = 200


def day_of(ms: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ms / 1000))


@dataclass(slots=True)
class Day:
    counts: dict[str, int] = field(default_factory=dict)  # verdict -> decisions
    seconds: float = 0.0  # time on the items that were leased
    timed: int = 0  # how many of them
    items: list[dict[str, Any]] = field(default_factory=list)  # newest first

    @property
    def decided(self) -> int:
        return sum(self.counts.values())

    @property
    def per_hour(self) -> float | None:
        """Pace: items an hour of time on item (None until an item was timed)."""
        return self.timed / (self.seconds / 3_600) if self.seconds > 0 else None


class WorkLog(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix

    async def record(
        self, reviewer: str, meta: HoldMeta, verdict: str, state: str, seconds: float | None
    ) -> None:
        now_ms = time.time() * 1000
        day = day_of(now_ms)
        counts, items = f"{self._p}work:{reviewer}:{day}", f"{self._p}worklog:{reviewer}:{day}"
        entry = {
            "item_id": meta.item_id, "domain": meta.domain, "pool": meta.pool,
            "verdict": verdict, "state": state, "at_ms": int(now_ms), "seconds": seconds,
        }  # fmt: skip
        with redis_errors("redis work log"):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hincrby(counts, f"verdict:{verdict}", 1)
                if seconds is not None:
                    pipe.hincrbyfloat(counts, "seconds", seconds)
                    pipe.hincrby(counts, "timed", 1)
                pipe.lpush(items, orjson.dumps(entry))
                pipe.ltrim(items, 0, LAST - 1)
                pipe.expire(counts, KEEP_S)
                pipe.expire(items, KEEP_S)
                await pipe.execute()

    async def today(self, reviewer: str) -> Day:
        day = day_of(time.time() * 1000)
        with redis_errors("redis work log"):
            counts = await self._r.hgetall(f"{self._p}work:{reviewer}:{day}")
            items = await self._r.lrange(f"{self._p}worklog:{reviewer}:{day}", 0, LAST - 1)
        found = Day(items=[orjson.loads(i) for i in items])
        for raw_key, raw_value in counts.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            if key.startswith("verdict:"):
                found.counts[key.removeprefix("verdict:")] = int(value)
            elif key == "seconds":
                found.seconds = float(value)
            elif key == "timed":
                found.timed = int(value)
        return found
