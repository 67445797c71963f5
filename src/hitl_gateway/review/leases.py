"""Redis wrapper: reviewers' leases on held items, so two reviewers never work the same
single-review item.

Taking an item leases it for ``HITL_REVIEW__LEASE_S``; the reviewer's page renews it while it
is open; a decision, "put back" or the lease running out releases it. A consensus item has
as many seats as it still needs distinct reviewers (an adjudication, one). A lease is
advisory for the decision path (decisions over the topic never look at it); the review API
and the workspace refuse a decision on an item whose seats are all held by others.

Key: ``lease:{item}``, a hash reviewer -> "expires_ms:taken_ms" (taken_ms: when this reviewer
first took it, kept across renewals: the time on item).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

# ARGV: key, reviewer, seats, ttl ms. Drops expired leases; renews the reviewer's own, or
# takes a free seat. Returns {granted (0/1), field, value, field, value, ...} of live leases.
_TAKE = """
local key, reviewer = ARGV[1], ARGV[2]
local seats, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', key)
local others, mine_taken = 0, nil
for i = 1, #all, 2 do
  local expires, taken = string.match(all[i + 1], '^(%d+):(%d+)$')
  if tonumber(expires) <= now then
    redis.call('HDEL', key, all[i])
  elseif all[i] == reviewer then
    mine_taken = taken
  else
    others = others + 1
  end
end
local granted = 0
if mine_taken or others < seats then
  granted = 1
  local taken = mine_taken or string.format('%d', now)
  redis.call('HSET', key, reviewer, string.format('%d:%s', now + ttl, taken))
  redis.call('PEXPIRE', key, ttl)
end
local out = {granted}
for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
return out
"""


@dataclass(frozen=True, slots=True)
class Lease:
    reviewer: str
    expires_ms: int
    taken_ms: int


@dataclass(frozen=True, slots=True)
class Taken:
    granted: bool
    holders: list[Lease]  # every live lease on the item, the caller's included when granted

    def of(self, reviewer: str) -> Lease | None:
        return next((h for h in self.holders if h.reviewer == reviewer), None)


def _leases(flat: list[bytes | str], now_ms: int | None = None) -> list[Lease]:
    out = []
    for name, value in zip(flat[0::2], flat[1::2], strict=True):
        text = value.decode() if isinstance(value, bytes) else value
        expires, taken = (int(x) for x in text.split(":"))
        if now_ms is None or expires > now_ms:
            reviewer = name.decode() if isinstance(name, bytes) else name
            out.append(Lease(reviewer, expires, taken))
    return sorted(out, key=lambda lease: lease.taken_ms)


class Leases(RedisWrapper):
    def __init__(
        self, settings: RedisSettings, ttl_s: float, client: aioredis.Redis | None = None
    ) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._take = self._r.register_script(_TAKE)

    async def take(self, item_id: str, reviewer: str, seats: int) -> Taken:
        """Take (or renew) ``reviewer``'s lease on the item if one of its ``seats`` is free."""
        with redis_errors("redis lease"):
            reply = await self._take(
                args=[f"{self._p}lease:{item_id}", reviewer, max(seats, 0), self._ttl_ms]
            )
        return Taken(bool(int(reply[0])), _leases(reply[1:]))

    async def release(self, item_id: str, reviewer: str) -> None:
        with redis_errors("redis lease"):
            await self._r.hdel(f"{self._p}lease:{item_id}", reviewer)

    async def holders(self, item_ids: list[str], now_ms: int) -> dict[str, list[Lease]]:
        """The live leases of each item (for a queue page)."""
        if not item_ids:
            return {}
        with redis_errors("redis lease"):
            async with self._r.pipeline(transaction=False) as pipe:
                for item_id in item_ids:
                    pipe.hgetall(f"{self._p}lease:{item_id}")
                replies = await pipe.execute()
        found = {}
        for item_id, reply in zip(item_ids, replies, strict=True):
            flat = [x for kv in reply.items() for x in kv]
            live = _leases(flat, now_ms)
            if live:
                found[item_id] = live
        return found
